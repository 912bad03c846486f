"""GAN Slimming Studio core library.

Importing this package does no disk, network or device work; see docs/design.md for the data flow:
photos -> teacher (models/) -> GS student (slim/) -> extract (slim/) -> measure (eval/) -> manifest (grid.py).
"""

# Storage (checkpoint.py) sits below the GS method; the method registers how its students are described and rebuilt.
import gs_core.slim.student  # noqa: F401  (it registers with gs_core.checkpoint)
