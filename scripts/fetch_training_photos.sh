#!/usr/bin/env bash
# Download the Debian packages whose photographs train the default image tokenizer, unpack them outside
# the repository and write the training / held-out lists (see docs/training_data.md for the licences).
#   scripts/fetch_training_photos.sh [DEST]        (default /tmp/vqgan_data; needs apt-get and dpkg)
# Output: DEST/train.txt (photos to train on), DEST/heldout.txt (photos never trained on), and
# DEST/train_phase1.txt (the Debian-only subset the first training phase of the default tokenizer used).
# Also needs pip (downloads the scikit-image, scikit-learn and matplotlib wheels for their sample photos;
# nothing is installed).
set -euo pipefail
DEST=$(realpath -m "${1:-/tmp/vqgan_data}")
PIP=${PIP:-$(realpath "$(dirname "$0")/..")/.venv/bin/pip}
PACKAGES="lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 plasma-workspace-wallpapers mate-backgrounds"
mkdir -p "$DEST/debs" "$DEST/x"
cd "$DEST/debs"
if ! apt-get download $PACKAGES; then
  apt-get update -q && apt-get download $PACKAGES
fi
for deb in "$DEST"/debs/*.deb; do
  name=$(basename "$deb"); name=${name%%_*}
  mkdir -p "$DEST/x/$name" && dpkg -x "$deb" "$DEST/x/$name"
done
L16=$DEST/x/lomiri-wallpapers-16.04/usr/share/backgrounds
L20=$DEST/x/lomiri-wallpapers-20.04/usr/share/backgrounds
KDE=$DEST/x/plasma-workspace-wallpapers/usr/share/wallpapers
MATE=$DEST/x/mate-backgrounds/usr/share/backgrounds/mate/nature
# training: photographs only (vector art, renders and gradients left out)
{
  for f in Bridge_by_Sander_Klootwijk Dragonfly_by_Bolly Picture_0B_by_freespace Picture_1A_by_freespace \
           Wine_by_Jakkub_Mede aitzgorri_by_Aitzol_Berasategi analogpattern_by_Peter_Nerlich free_by_Peter_Nerlich \
           friends_by_Aitzol_Berasategi greentock_by_Peter_Nerlich life_by_Aitzol_Berasategi \
           picosdeeuropa_by_Aitzol_Berasategi seeding_by_Clements_Engelhardt sunset_by_Aitzol_Berasategi; do
    echo "$L16/$f.jpg"
  done
  echo "$L20/Kleiber_by_Lukas_Baubkus.jpg"
  for d in BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite OneStandsOut Path summer_1am; do
    readlink -f "$KDE/$d/contents/images/2560x1600.jpg"
  done
} > "$DEST/train_phase1.txt"
# phase 2 adds: the other six mate nature photos, Plasma's Volna, and the CC0 / public-domain / CC-BY sample
# photos that scikit-image, scikit-learn and matplotlib ship in their wheels (not scikit-image's five held-out
# fixture photos; not its moon or motorcycle images, whose licences are unstated)
mkdir -p "$DEST/wheels" "$DEST/x/pypi"
"$PIP" download --no-deps --only-binary=:all: -d "$DEST/wheels" scikit-image scikit-learn matplotlib >/dev/null
for whl in "$DEST"/wheels/*.whl; do
  python3 -m zipfile -e "$whl" "$DEST/x/pypi/$(basename "$whl" .whl)" >/dev/null
done
{
  cat "$DEST/train_phase1.txt"
  for f in Blinds FreshFlower Garden GreenMeadow RainDrops Wood; do echo "$MATE/$f.jpg"; done
  readlink -f "$KDE/Volna/contents/images/5120x2880.jpg"
  for f in sklearn/datasets/images/china.jpg sklearn/datasets/images/flower.jpg \
           matplotlib/mpl-data/sample_data/grace_hopper.jpg skimage/data/retina.jpg skimage/data/ihc.png \
           skimage/data/camera.png skimage/data/brick.png skimage/data/grass.png skimage/data/gravel.png \
           skimage/data/coins.png; do
    ls "$DEST"/x/pypi/*/"$f"
  done
} > "$DEST/train.txt"
# held out: six of mate-backgrounds' nature photographs (the other six are trained on); the repository's
# fixture photos (tests/data or ../shared/fixtures/images) are held out as well
for f in Aqua Dune LadyBird Storm TwoWings YellowFlower; do echo "$MATE/$f.jpg"; done > "$DEST/heldout.txt"
while read -r f; do test -f "$f" || { echo "missing: $f" >&2; exit 1; }; done < <(cat "$DEST/train_phase1.txt" "$DEST/train.txt" "$DEST/heldout.txt")
echo "$(wc -l < "$DEST/train.txt") training photos in $DEST/train.txt, $(wc -l < "$DEST/heldout.txt") held-out photos in $DEST/heldout.txt"
