"""GAN Slimming Studio core library.

Importing this package does no disk, network or device work; see the README for the data flow:
photos -> teacher (models/) -> GS student (slim/) -> extract (slim/) -> measure (eval/) -> manifest (grid.py).
"""
