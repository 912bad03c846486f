"""The embedded photo set: natural photographs gathered from package data.

The repository ships downscaled copies under ``data/photos/{train,val,test}``
together with ``data/photos/SOURCES.csv`` (origin, licence and split of every
file). :func:`build_photoset` recreates them from the installed packages: the
selection below is a plain table, and the split is a pure function of the
short names and a seed, so a rebuild always picks the same photos and puts
them in the same splits.

Only real photographs are listed (no illustrations, abstract art or logos).
Wallpapers from ``plasma-workspace-wallpapers`` and ``ukui-wallpapers`` are
deliberately absent: they are reserved for independent evaluation, so no
training or tuning may ever see them.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from gs_core.data.images import list_images, load_rgb

#: Debian packages the set is built from (``apt-get install`` them to rebuild).
APT_PACKAGES = ("mate-backgrounds", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "opencv-doc")
#: PyPI distributions the set is built from.
PYPI_PACKAGES = ("scikit-image",)
#: Packages whose images are reserved for independent evaluation.
RESERVED_PACKAGES = ("plasma-workspace-wallpapers", "ukui-wallpapers")

SPLITS = ("train", "val", "test")
#: Share of each package's photos that goes to val and to test (each).
HELD_OUT_FRACTION = 0.15
SPLIT_SEED = "gan-slimming-photoset-v1"
LONG_SIDE = 384
JPEG_QUALITY = 90
CSV_COLUMNS = ("file", "split", "package", "original_path", "license", "width", "height")


@dataclass(frozen=True)
class PhotoSource:
    """One photo: where it comes from and what it is called in the set.

    ``path`` is absolute for Debian packages; for PyPI distributions it is
    relative to the site-packages folder, starting with the import name.
    """

    name: str
    package: str
    path: str
    license: str


_MATE = "/usr/share/backgrounds/mate/nature/"
_WALLS = "/usr/share/backgrounds/"
_LOMIRI_16, _LOMIRI_20 = "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04"
_OPENCV = "/usr/share/doc/opencv-doc/examples/"
# Debian's copyright file for opencv covers the sample data with "Files: *".
_OPENCV_LICENSE = "Apache-2.0 AND BSD-3-Clause"

SOURCES: tuple[PhotoSource, ...] = (
    # mate-backgrounds: the "nature" set (Debian copyright: GPL-2+).
    PhotoSource("mate_aqua", "mate-backgrounds", _MATE + "Aqua.jpg", "GPL-2+"),
    PhotoSource("mate_blinds", "mate-backgrounds", _MATE + "Blinds.jpg", "GPL-2+"),
    PhotoSource("mate_dune", "mate-backgrounds", _MATE + "Dune.jpg", "GPL-2+"),
    PhotoSource("mate_fresh_flower", "mate-backgrounds", _MATE + "FreshFlower.jpg", "GPL-2+"),
    PhotoSource("mate_garden", "mate-backgrounds", _MATE + "Garden.jpg", "GPL-2+"),
    PhotoSource("mate_green_meadow", "mate-backgrounds", _MATE + "GreenMeadow.jpg", "GPL-2+"),
    PhotoSource("mate_lady_bird", "mate-backgrounds", _MATE + "LadyBird.jpg", "GPL-2+"),
    PhotoSource("mate_rain_drops", "mate-backgrounds", _MATE + "RainDrops.jpg", "GPL-2+"),
    PhotoSource("mate_storm", "mate-backgrounds", _MATE + "Storm.jpg", "GPL-2+"),
    PhotoSource("mate_two_wings", "mate-backgrounds", _MATE + "TwoWings.jpg", "GPL-2+"),
    PhotoSource("mate_wood", "mate-backgrounds", _MATE + "Wood.jpg", "GPL-2+"),
    PhotoSource("mate_yellow_flower", "mate-backgrounds", _MATE + "YellowFlower.jpg", "GPL-2+"),
    # lomiri-wallpapers: the photographs among the community wallpapers.
    PhotoSource("lomiri_bridge", _LOMIRI_16, _WALLS + "Bridge_by_Sander_Klootwijk.jpg", "CC-BY-SA-4.0"),
    PhotoSource("lomiri_dragonfly", _LOMIRI_16, _WALLS + "Dragonfly_by_Bolly.jpg", "CC-BY-SA-4.0"),
    PhotoSource("lomiri_fig", _LOMIRI_16, _WALLS + "Picture_0B_by_freespace.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_brushes", _LOMIRI_16, _WALLS + "Picture_1A_by_freespace.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_wine", _LOMIRI_16, _WALLS + "Wine_by_Jakkub_Mede.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_aitzgorri", _LOMIRI_16, _WALLS + "aitzgorri_by_Aitzol_Berasategi.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_bird_lamp", _LOMIRI_16, _WALLS + "free_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0"),
    PhotoSource("lomiri_dogs", _LOMIRI_16, _WALLS + "friends_by_Aitzol_Berasategi.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_clock", _LOMIRI_16, _WALLS + "greentock_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0"),
    PhotoSource("lomiri_creek", _LOMIRI_16, _WALLS + "life_by_Aitzol_Berasategi.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_picos", _LOMIRI_16, _WALLS + "picosdeeuropa_by_Aitzol_Berasategi.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_dandelions", _LOMIRI_16, _WALLS + "seeding_by_Clements_Engelhardt.jpg", "CC0-1.0"),
    PhotoSource("lomiri_sunset", _LOMIRI_16, _WALLS + "sunset_by_Aitzol_Berasategi.jpg", "CC-BY-4.0"),
    PhotoSource("lomiri_nuthatch", _LOMIRI_20, _WALLS + "Kleiber_by_Lukas_Baubkus.jpg", "CC-BY-SA-3.0"),
    # opencv-doc: the photographs among the sample data (no test charts,
    # synthetic images, grayscale-only or text-heavy pictures).
    PhotoSource("opencv_plant", "opencv-doc", _OPENCV + "alphamat/input_images/plant.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_aerial", "opencv-doc", _OPENCV + "data/aero1.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_aloe", "opencv-doc", _OPENCV + "data/aloeL.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_apple", "opencv-doc", _OPENCV + "data/apple.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_baboon", "opencv-doc", _OPENCV + "data/baboon.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_circuit_board", "opencv-doc", _OPENCV + "data/board.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_building", "opencv-doc", _OPENCV + "data/building.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_butterfly", "opencv-doc", _OPENCV + "data/butterfly.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_dog", "opencv-doc", _OPENCV + "data/chicky_512.png", _OPENCV_LICENSE),
    PhotoSource("opencv_fruits", "opencv-doc", _OPENCV + "data/fruits.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_palace", "opencv-doc", _OPENCV + "data/home.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_leuven", "opencv-doc", _OPENCV + "data/leuvenA.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_orange", "opencv-doc", _OPENCV + "data/orange.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_toys", "opencv-doc", _OPENCV + "data/rubberwhale1.png", _OPENCV_LICENSE),
    PhotoSource("opencv_sweets", "opencv-doc", _OPENCV + "data/smarties.png", _OPENCV_LICENSE),
    PhotoSource("opencv_squirrel", "opencv-doc", _OPENCV + "data/squirrel_cls.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_wing", "opencv-doc", _OPENCV + "dnn_superres/butterfly.png", _OPENCV_LICENSE),
    PhotoSource("opencv_robin", "opencv-doc", _OPENCV + "hfs/data/000.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_lake", "opencv-doc", _OPENCV + "hfs/data/001.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_tree", "opencv-doc", _OPENCV + "hfs/data/002.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_brick_house", "opencv-doc", _OPENCV + "reg/home.png", _OPENCV_LICENSE),
    PhotoSource("opencv_street_sign", "opencv-doc", _OPENCV + "text/scenetext01.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_campus_sign", "opencv-doc", _OPENCV + "text/scenetext02.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_palms", "opencv-doc", _OPENCV + "text/scenetext04.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_barrier", "opencv-doc", _OPENCV + "text/scenetext05.jpg", _OPENCV_LICENSE),
    PhotoSource("opencv_pub", "opencv-doc", _OPENCV + "text/scenetext06.jpg", _OPENCV_LICENSE),
    # scikit-image: the photographs shipped inside the wheel (others are
    # downloaded on demand, which cannot work offline). Licences are those
    # stated in skimage.data's docstrings.
    PhotoSource("skimage_astronaut", "scikit-image", "skimage/data/astronaut.png", "public domain (NASA)"),
    PhotoSource("skimage_camera", "scikit-image", "skimage/data/camera.png", "CC0-1.0"),
    PhotoSource("skimage_cat", "scikit-image", "skimage/data/chelsea.png", "CC0-1.0"),
    PhotoSource("skimage_coffee", "scikit-image", "skimage/data/coffee.png", "CC0-1.0"),
    PhotoSource("skimage_rocket", "scikit-image", "skimage/data/rocket.jpg", "public domain (SpaceX)"),
)


def photoset_dir() -> Path:
    """The repository's ``data/photos`` folder."""
    return Path(__file__).resolve().parents[2] / "data" / "photos"


def load_split(split: str, root: Path | None = None) -> list[Path]:
    """Sorted paths of the photos in ``split`` ("train", "val" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return list_images((root or photoset_dir()) / split)


def read_sources(root: Path | None = None) -> list[dict[str, str]]:
    """The rows of ``SOURCES.csv`` as dictionaries keyed by :data:`CSV_COLUMNS`."""
    with open((root or photoset_dir()) / "SOURCES.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assign_splits(sources: tuple[PhotoSource, ...] = SOURCES, seed: str = SPLIT_SEED) -> dict[str, str]:
    """Map each short name to its split.

    Splitting each package separately spreads every source over all three
    splits. Within a package the order is a hash of (seed, name): it is
    shuffled, yet adding or removing one photo leaves the others in place.
    """
    by_package: dict[str, list[str]] = {}
    for source in sources:
        by_package.setdefault(source.package, []).append(source.name)
    splits = {}
    for names in by_package.values():
        names.sort(key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
        held_out = round(len(names) * HELD_OUT_FRACTION)
        for index, name in enumerate(names):
            if index < held_out:
                splits[name] = "test"
            elif index < 2 * held_out:
                splits[name] = "val"
            else:
                splits[name] = "train"
    return splits


def resolve_source(source: PhotoSource) -> Path:
    """The installed file behind ``source``; says what to install if missing."""
    if source.package in RESERVED_PACKAGES:
        raise ValueError(f"{source.package} is reserved for independent evaluation")
    if source.package in PYPI_PACKAGES:
        module = source.path.split("/", 1)[0]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"Python package {module!r} is not importable: pip install {source.package}"
            )
        path = Path(list(spec.submodule_search_locations)[0]).parent / source.path
    else:
        path = Path(source.path)
    if not path.is_file():
        installer = "pip install" if source.package in PYPI_PACKAGES else "apt-get install"
        raise FileNotFoundError(
            f"Photo {source.name!r} needs {path}, which is missing: {installer} {source.package}"
        )
    return path


def package_version(package: str) -> str:
    """Installed version of a PyPI distribution or a Debian package."""
    if package in PYPI_PACKAGES:
        return importlib.metadata.version(package)
    result = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${Version}", package],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not result.stdout:
        raise FileNotFoundError(f"Debian package {package} is not installed: apt-get install {package}")
    return result.stdout


def build_photoset(
    out_dir: Path | None = None, sources: tuple[PhotoSource, ...] = SOURCES
) -> list[dict[str, str]]:
    """Rebuild the photo set from installed packages into ``out_dir``.

    Every source is checked before anything is written, so a missing package
    fails fast without leaving a half-built set. Existing ``*.jpg`` files in
    the split folders are replaced. Returns the rows written to SOURCES.csv.
    """
    out_dir = Path(out_dir) if out_dir is not None else photoset_dir()
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ValueError("short names in the source table must be unique")
    files = {source.name: resolve_source(source) for source in sources}
    versions = {package: package_version(package) for package in {s.package for s in sources}}
    splits = assign_splits(sources)

    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / split).glob("*.jpg"):
            stale.unlink()
    rows = []
    for source in sorted(sources, key=lambda s: (SPLITS.index(splits[s.name]), s.name)):
        # load_rgb only downscales; the few photos already under LONG_SIDE
        # keep their size rather than being blown up.
        rgb, _ = load_rgb(files[source.name], max_side=LONG_SIDE)
        relative = f"{splits[source.name]}/{source.name}.jpg"
        Image.fromarray(rgb).save(out_dir / relative, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        rows.append({
            "file": relative,
            "split": splits[source.name],
            "package": f"{source.package} {versions[source.package]}",
            "original_path": source.path,
            "license": source.license,
            "width": str(rgb.shape[1]),
            "height": str(rgb.shape[0]),
        })
    with open(out_dir / "SOURCES.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


if __name__ == "__main__":
    built = build_photoset()
    counts = {split: sum(row["split"] == split for row in built) for split in SPLITS}
    print(f"wrote {len(built)} photos to {photoset_dir()}: {counts}")
