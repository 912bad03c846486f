"""Generators (teachers and slim students) and the discriminator. Entry points: `create_generator`,
`generator_from_state_dict`.

Importing an architecture's file registers it (`registry.register_generator`): a new architecture is its model file
plus one import line here."""
from gs_core.models.animeganv2 import AnimeGANv2
from gs_core.models.base import ChannelGroup, Generator
from gs_core.models.cartoongan import CartoonGAN
from gs_core.models.patchgan import PatchDiscriminator
from gs_core.models.registry import (ALIASES, GENERATORS, StateDictMismatch, create_generator, detect_architecture,
                                     generator_from_state_dict, load_state_dict_strict)
from gs_core.models.resnet_generator import ResnetGenerator

__all__ = ["ALIASES", "AnimeGANv2", "CartoonGAN", "ChannelGroup", "GENERATORS", "Generator", "PatchDiscriminator",
           "ResnetGenerator", "StateDictMismatch", "create_generator", "detect_architecture",
           "generator_from_state_dict", "load_state_dict_strict"]
