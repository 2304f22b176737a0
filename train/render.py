"""Synthetic licence plates for training and testing edgecam's plate recogniser.

Each sample is what the daemon gives the recogniser: the plate's main line of text
as the text detector boxes it (a little room at the ends, sometimes a country band,
a bolt or part of a state name inside), straightened and scaled to 32 pixels high,
at most 192 wide, padded with mid-grey; and its label, the plate's letters and
digits without spaces or dashes.

Plates follow the layouts in src/analytics/plates/layouts.txt (the same table the
decoder uses) plus a share of free-form texts, drawn in fonts from Debian packages
with the country's colours and furniture: EU bands, Brazil's Mercosur header, US
state names and slogans, frames, bolts, stickers. Then the camera: perspective,
resolution, blur, noise, glare, shadows, night IR, JPEG.

Deterministic: the same seed, fonts and count give the same bytes.

    python3 train/render.py --seed 7 --count 500 [--out plates.npz] [--png DIR] [--jpg DIR]
        [--fonts train|test|a.ttf,b.ttf]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import re
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUTS = os.path.join(HERE, "..", "src", "analytics", "plates", "layouts.txt")

HEIGHT = 32
WIDTH = 192
SYMBOLS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"

# Fonts the shipped model was trained on (Debian packages: fonts-dejavu-core,
# fonts-dejavu-extra, fonts-liberation2, fonts-urw-base35, fonts-croscore,
# fonts-liberation, fonts-open-sans, fonts-lato, fonts-inter, fonts-b612,
# fonts-league-spartan, fonts-cantarell).
TRAIN_FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationMono-Bold.ttf",
    "/usr/share/fonts/opentype/urw-base35/NimbusSansNarrow-Bold.otf",
    "/usr/share/fonts/opentype/urw-base35/NimbusSans-Bold.otf",
    "/usr/share/fonts/opentype/urw-base35/NimbusMonoPS-Bold.otf",
    "/usr/share/fonts/truetype/croscore/Arimo-Bold.ttf",
    "/usr/share/fonts/truetype/croscore/Cousine-Bold.ttf",
    "/usr/share/fonts/truetype/croscore/Tinos-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf",
    "/usr/share/fonts/truetype/open-sans/OpenSans-CondBold.ttf",
    "/usr/share/fonts/truetype/open-sans/OpenSans-Bold.ttf",
    "/usr/share/fonts/truetype/lato/Lato-Bold.ttf",
    "/usr/share/fonts/truetype/lato/Lato-Heavy.ttf",
    "/usr/share/fonts/opentype/inter/Inter-SemiBold.otf",
    "/usr/share/fonts/opentype/inter/Inter-ExtraBold.otf",
    "/usr/share/fonts/opentype/b612/B612-Bold.otf",
    "/usr/share/fonts/opentype/league-spartan/LeagueSpartan-Bold.otf",
    "/usr/share/fonts/opentype/cantarell/Cantarell-Bold.otf",
    "/usr/share/fonts/opentype/cantarell/Cantarell-ExtraBold.otf",
]
# Fonts it never saw, for the test (fonts-roboto-unhinted, fonts-freefont-ttf).
TEST_FONTS = [
    "/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSansBold.ttf",
]

US_STATES = {
    "US-AZ": ("ARIZONA", "GRAND CANYON STATE"),
    "US-CA": ("California", "DMV.CA.GOV"),
    "US-CO": ("COLORADO", ""),
    "US-FL": ("FLORIDA", "Sunshine State"),
    "US-GA": ("GEORGIA", "IN GOD WE TRUST"),
    "US-IL": ("Illinois", "Land of Lincoln"),
    "US-IN": ("INDIANA", "IN GOD WE TRUST"),
    "US-MA": ("Massachusetts", "The Spirit of America"),
    "US-MD": ("MARYLAND", "My Maryland"),
    "US-MI": ("MICHIGAN", "Pure Michigan"),
    "US-MN": ("MINNESOTA", "10,000 lakes"),
    "US-MO": ("MISSOURI", "SHOW-ME STATE"),
    "US-NC": ("NORTH CAROLINA", "FIRST IN FLIGHT"),
    "US-NJ": ("NEW JERSEY", "Garden State"),
    "US-NV": ("NEVADA", "THE SILVER STATE"),
    "US-NY": ("NEW YORK", "EMPIRE STATE"),
    "US-OH": ("OHIO", "BIRTHPLACE OF AVIATION"),
    "US-OR": ("OREGON", ""),
    "US-PA": ("PENNSYLVANIA", "visitPA.com"),
    "US-TN": ("TENNESSEE", "VOLUNTEER STATE"),
    "US-TX": ("TEXAS", "THE LONE STAR STATE"),
    "US-WA": ("WASHINGTON", "EVERGREEN STATE"),
    "US-VA": ("VIRGINIA", "VIRGINIA IS FOR LOVERS"),
}
EU_BAND = {"AT": "A", "BE": "B", "BG": "BG", "CH": "CH", "CY": "CY", "CZ": "CZ", "DE": "D",
           "DK": "DK", "EE": "EST", "ES": "E", "FI": "FIN", "FR": "F", "GB": "UK", "GR": "GR",
           "HR": "HR", "HU": "H", "IE": "IRL", "IT": "I", "LT": "LT", "LU": "L", "LV": "LV",
           "NL": "NL", "NO": "N", "PL": "PL", "PT": "P", "RO": "RO", "SE": "S", "SI": "SLO",
           "SK": "SK"}


def layouts() -> list[tuple[str, str, list[str]]]:
    """(region, country, layouts) from the decoder's table."""
    out = []
    with open(LAYOUTS, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if len(line) >= 3:
                out.append((line[0], line[1], line[2:]))
    return out


def expand(layout: str, rng: random.Random) -> list[str]:
    """One instance of a layout: a list of its places' kinds (L, N, X or a literal)."""
    places = []
    for m in re.finditer(r"([LNX0-9A-Z])(\{(\d),(\d)\})?", layout):
        n = rng.randint(int(m.group(3)), int(m.group(4))) if m.group(2) else 1
        places += [m.group(1)] * n
    return places


def fill(places: list[str], rng: random.Random) -> str:
    out = []
    for p in places:
        if p == "L":
            out.append(rng.choice(LETTERS))
        elif p == "N":
            out.append(rng.choice(DIGITS))
        elif p == "X":
            out.append(rng.choice(SYMBOLS))
        else:
            out.append(p)
    return "".join(out)


def groups(text: str, places: list[str], rng: random.Random) -> str:
    """The text as printed: a space or dash where letters turn to digits, sometimes."""
    sep = rng.choice([" ", " ", "-", "", "  "])
    if sep == "" or rng.random() < 0.15:
        return text
    out = text[0]
    for i in range(1, len(text)):
        a, b = places[i - 1] if i - 1 < len(places) else "X", places[i] if i < len(places) else "X"
        if a != b and {a, b} <= {"L", "N"} and rng.random() < 0.8:
            out += sep
        out += text[i]
    return out


def plate_text(region: str, table, rng: random.Random) -> tuple[str, str, str, str]:
    """(label, printed, region, country)."""
    if rng.random() < 0.1:
        # Free-form (personalised, foreign, older series).
        n = rng.randint(3, 8)
        label = "".join(rng.choice(SYMBOLS) for _ in range(n))
        printed = label if rng.random() < 0.6 else label[: n // 2] + " " + label[n // 2 :]
        return label, printed, region, rng.choice([c for r, c, _ in table if r == region])
    rows = [t for t in table if t[0] == region]
    _, country, lays = rng.choice(rows)
    places = expand(rng.choice(lays), rng)
    label = fill(places, rng)
    return label, groups(label, places, rng), region, country


def colour(rng: random.Random, base, spread=25):
    return tuple(max(0, min(255, c + rng.randint(-spread, spread))) for c in base)


def font(path: str, size: int):
    return ImageFont.truetype(path, size)


def text_size(draw, text, f):
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=f)
    return x1 - x0, y1 - y0, x0, y0


def draw_plate(label, printed, region, country, fonts, rng):
    """The plate, flat and large: (image RGB, main-line box x0, y0, x1, y1)."""
    cap = 44  # main characters' cap height, pixels
    fpath = rng.choice(fonts)
    f = font(fpath, int(cap * 1.38))
    scratch = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    # Squeeze or stretch the characters a little.
    tw, th, ox, oy = text_size(scratch, printed, f)
    stretch = rng.uniform(0.75, 1.15)
    spacing = rng.uniform(0.0, 0.12) * cap
    widths = [cap * 0.45 if ch == " " else cap * 0.4 if ch == "-" else text_size(scratch, ch, f)[0] for ch in printed]
    line_w = int(sum(w * stretch for w in widths) + spacing * (len(printed) - 1))
    pad_x = int(cap * rng.uniform(0.25, 0.6))
    band = ""
    top = bottom = ""
    bg, fg = (235, 235, 235), (20, 20, 20)
    if region == "eu":
        band = EU_BAND.get(country, "") if rng.random() < 0.8 else ""
        bg = (250, 210, 40) if country in ("NL", "LU") or (country == "GB" and rng.random() < 0.5) else bg
    elif region == "br":
        if rng.random() < 0.6:
            top = "BRASIL"  # Mercosur: white, a blue header
        else:
            bg = (175, 175, 170)  # the old grey plate, city above
            top = rng.choice(["SP - SAO PAULO", "RJ - RIO DE JANEIRO", "MG - BELO HORIZONTE", "PR - CURITIBA"])
    else:
        name, slogan = US_STATES.get(country, ("", ""))
        top, bottom = name, slogan if rng.random() < 0.8 else ""
        fg = rng.choice([(20, 20, 20), (20, 30, 110), (130, 20, 20), (20, 80, 30)])
        bg = rng.choice([(240, 240, 240), (235, 235, 225), (250, 235, 190), (225, 235, 250)])
    band_w = int(cap * 0.75) if band else 0
    top_h = int(cap * rng.uniform(0.35, 0.6)) if top else int(cap * rng.uniform(0.15, 0.35))
    bottom_h = int(cap * rng.uniform(0.3, 0.5)) if bottom else int(cap * rng.uniform(0.15, 0.35))
    w = band_w + pad_x * 2 + line_w
    h = top_h + int(cap * 1.25) + bottom_h
    img = Image.new("RGB", (w, h), colour(rng, bg, 15))
    d = ImageDraw.Draw(img)
    if band:
        d.rectangle([0, 0, band_w, h], fill=colour(rng, (20, 50, 160), 20))
        cx = band_w // 2
        for k in range(12):  # the ring of stars, as dots
            a = 2 * math.pi * k / 12
            r = band_w * 0.22
            x, y = cx + r * math.cos(a), h * 0.3 + r * math.sin(a)
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(240, 200, 30))
        bf = font(fpath, int(cap * (0.5 if len(band) < 3 else 0.36)))
        bw, bh, box, boy = text_size(d, band, bf)
        d.text((cx - bw / 2 - box, h * 0.72 - bh / 2 - boy), band, font=bf, fill=(245, 245, 245))
    if region == "br" and top == "BRASIL":
        d.rectangle([0, 0, w, top_h], fill=colour(rng, (20, 60, 170), 20))
        tf = font(fpath, max(8, int(top_h * 0.8)))
        tw2, th2, tox, toy = text_size(d, top, tf)
        d.text(((w - tw2) / 2 - tox, (top_h - th2) / 2 - toy), top, font=tf, fill=(245, 245, 245))
    elif top:
        tf = font(rng.choice(fonts), max(8, int(top_h * 0.85)))
        tw2, th2, tox, toy = text_size(d, top, tf)
        d.text(((w - tw2) / 2 - tox, (top_h - th2) / 2 - toy + 2), top, font=tf, fill=fg)
    if bottom:
        sf = font(rng.choice(fonts), max(8, int(bottom_h * 0.75)))
        sw, sh, sox, soy = text_size(d, bottom, sf)
        d.text(((w - sw) / 2 - sox, h - bottom_h + (bottom_h - sh) / 2 - soy), bottom, font=sf, fill=fg)
    # The main line, character by character.
    x = band_w + pad_x
    y = top_h + int(cap * 0.125)
    x0 = x
    sticker_at = rng.randrange(len(printed)) if (region == "eu" and rng.random() < 0.3) else -1
    for i, (ch, cw) in enumerate(zip(printed, widths)):
        if ch == "-":
            dw = cw * stretch
            d.rectangle([x + dw * 0.15, y + cap * 0.45, x + dw * 0.85, y + cap * 0.58], fill=fg)
            x += dw + spacing
            continue
        if ch == " ":
            if i == sticker_at or (sticker_at >= 0 and printed[sticker_at] != " " and i > sticker_at):
                r = cap * 0.22
                cx_, cy_ = x + cw * stretch / 2, y + cap / 2
                d.ellipse([cx_ - r, cy_ - r * 1.5, cx_ + r, cy_ - r * 0.1], fill=colour(rng, (40, 120, 200), 60))
                d.ellipse([cx_ - r, cy_ + r * 0.1, cx_ + r, cy_ + r * 1.5], fill=colour(rng, (200, 60, 40), 60))
                sticker_at = -2
            x += cw * stretch + spacing
            continue
        glyph = Image.new("L", (int(cw + cap), int(cap * 1.8)), 0)
        gd = ImageDraw.Draw(glyph)
        gw, gh, gox, goy = text_size(gd, ch, f)
        gd.text((-gox + cap // 2, -goy + int(cap * 0.1)), ch, font=f, fill=255)
        bb = glyph.getbbox()
        if bb is None:
            continue
        glyph = glyph.crop(bb)
        nw = max(1, int(glyph.width * stretch))
        glyph = glyph.resize((nw, cap), Image.BILINEAR)
        img.paste(Image.new("RGB", glyph.size, fg), (int(x), y), glyph)
        x += max(nw, cw * stretch * 0.9) + spacing
    x1 = int(x - spacing)
    # Frame and bolts.
    if rng.random() < 0.6:
        d.rectangle([2, 2, w - 3, h - 3], outline=colour(rng, fg, 30), width=rng.randint(2, 6))
    if rng.random() < 0.5:
        for bx in (w * rng.uniform(0.12, 0.3), w * rng.uniform(0.7, 0.88)):
            by = top_h * 0.5 if rng.random() < 0.5 else h - bottom_h * 0.5
            r = cap * 0.08
            d.ellipse([bx - r, by - r, bx + r, by + r], fill=(150, 150, 150), outline=(60, 60, 60))
    return img, (x0, y, x1, y + cap)


def surroundings(w, h, rng):
    """A car's paint, bumper and shadows around the plate."""
    base = colour(rng, rng.choice([(20, 20, 20), (200, 200, 205), (120, 20, 20), (30, 40, 90), (90, 90, 95), (230, 230, 230)]), 20)
    arr = np.full((h, w, 3), base, np.float32)
    arr += np.linspace(rng.uniform(-40, 0), rng.uniform(0, 40), h)[:, None, None]
    nrng = np.random.default_rng(rng.getrandbits(32))
    arr += nrng.normal(0, 6, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def camera(img: Image.Image, rng: random.Random, nrng) -> Image.Image:
    """Light, optics and compression."""
    a = np.asarray(img).astype(np.float32)
    if rng.random() < 0.15:  # night IR: grey, bright plate, dark rest
        g = a.mean(axis=2, keepdims=True)
        a = np.repeat(g, 3, axis=2) * rng.uniform(0.8, 1.4)
    if rng.random() < 0.3:  # a shadow across
        hh, ww = a.shape[:2]
        xs = np.arange(ww)[None, :] + np.arange(hh)[:, None] * rng.uniform(-1, 1)
        edge = rng.uniform(0, ww)
        a *= np.where(xs < edge, rng.uniform(0.4, 0.8), 1.0)[:, :, None]
    if rng.random() < 0.2:  # glare
        hh, ww = a.shape[:2]
        cy, cx = rng.uniform(0, hh), rng.uniform(0, ww)
        r = rng.uniform(0.2, 0.8) * ww
        yy, xx = np.mgrid[0:hh, 0:ww]
        a += rng.uniform(60, 200) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[:, :, None]
    contrast = rng.uniform(0.5, 1.2)
    a = (a - 128) * contrast + 128 + rng.uniform(-50, 40)
    a = 255 * (a.clip(0, 255) / 255) ** rng.uniform(0.7, 1.4)
    a += nrng.normal(0, rng.uniform(0, 12), a.shape)
    out = Image.fromarray(a.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.7:
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=rng.randint(25, 90))
        out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return out


def sample(rng: random.Random, fonts, table):
    region = rng.choice(["eu", "eu", "us", "us", "br"])
    label, printed, region, country = plate_text(region, table, rng)
    plate, (lx0, ly0, lx1, ly1) = draw_plate(label, printed, region, country, fonts, rng)
    # Onto the car, with room around.
    m = plate.height // 2
    scene = surroundings(plate.width + 2 * m, plate.height + 2 * m, rng)
    scene.paste(plate, (m, m))
    lx0, lx1, ly0, ly1 = lx0 + m, lx1 + m, ly0 + m, ly1 + m
    # Perspective: a rotation, a shear and a squeeze, as an affine map.
    ang = math.radians(rng.gauss(0, 3))
    shear = rng.gauss(0, 0.05)
    sx = rng.uniform(0.8, 1.1)
    c, s = math.cos(ang), math.sin(ang)
    # forward: p' = A p (about the scene centre)
    A = np.array([[c * sx, -s + shear], [s * sx, c]])
    ccx, ccy = scene.width / 2, scene.height / 2
    inv = np.linalg.inv(A)
    scene = scene.transform(
        scene.size,
        Image.AFFINE,
        (inv[0, 0], inv[0, 1], ccx - inv[0, 0] * ccx - inv[0, 1] * ccy,
         inv[1, 0], inv[1, 1], ccy - inv[1, 0] * ccx - inv[1, 1] * ccy),
        resample=Image.BILINEAR,
    )
    corners = np.array([[lx0, ly0], [lx1, ly0], [lx1, ly1], [lx0, ly1]], np.float64) - [ccx, ccy]
    corners = corners @ A.T + [ccx, ccy]
    # Distance: the main line's characters 10 to 48 pixels high.
    cap_px = rng.uniform(10, 48)
    k = cap_px / (ly1 - ly0)
    scene = scene.resize((max(8, int(scene.width * k)), max(8, int(scene.height * k))), Image.BILINEAR)
    corners *= k
    scene = camera(scene, rng, np.random.default_rng(rng.getrandbits(32)))
    # The detector's box: the rotated rectangle around the line, then the room the
    # reader gives its ends (and a little noise in where the detector put it).
    cx, cy = corners.mean(axis=0)
    dx, dy = corners[1] - corners[0]
    angle = math.atan2(dy, dx)
    length = np.linalg.norm(corners[1] - corners[0])
    e1, e3 = corners[1] - corners[0], corners[3] - corners[0]
    thick = abs(e1[0] * e3[1] - e1[1] * e3[0]) / length
    length += thick * rng.uniform(0.1, 0.9)
    thick *= rng.uniform(1.05, 1.6)
    along, across = rng.gauss(0, 0.04) * thick, rng.gauss(0, 0.05) * thick
    cx += math.cos(angle) * along - math.sin(angle) * across
    cy += math.sin(angle) * along + math.cos(angle) * across
    return straighten(np.asarray(scene), cx, cy, length, thick, angle), label


def straighten(img: np.ndarray, cx, cy, length, thick, angle) -> np.ndarray:
    """The recogniser's input for a box, as the daemon makes it
    (ocr::recogniser_input): HEIGHT high, aspect kept up to WIDTH, bilinear, the
    rest mid-grey. uint8 HxWx3 RGB (128 = the padding)."""
    scale = HEIGHT / max(thick, 1.0)
    w = int(min(max(math.ceil(length * scale), 1), WIDTH))
    su, sv = length / w, thick / HEIGHT
    c, s = math.cos(angle), math.sin(angle)
    u = (np.arange(w) + 0.5) * su - length / 2
    v = (np.arange(HEIGHT) + 0.5) * sv - thick / 2
    uu, vv = np.meshgrid(u, v)
    x = (cx + uu * c - vv * s - 0.5).clip(0, None)
    y = (cy + uu * s + vv * c - 0.5).clip(0, None)
    h, wd = img.shape[:2]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0c, x1c = x0.clip(0, wd - 1), (x0 + 1).clip(0, wd - 1)
    y0c, y1c = y0.clip(0, h - 1), (y0 + 1).clip(0, h - 1)
    f = img.astype(np.float32)
    top = f[y0c, x0c] * (1 - fx) + f[y0c, x1c] * fx
    bot = f[y1c, x0c] * (1 - fx) + f[y1c, x1c] * fx
    out = np.full((HEIGHT, WIDTH, 3), 127.5, np.float32)
    out[:, :w] = top * (1 - fy) + bot * fy
    return out.round().clip(0, 255).astype(np.uint8)


def render(seed: int, count: int, fonts: list[str]):
    for fp in fonts:
        if not os.path.exists(fp):
            sys.exit(f"render: font {fp} is missing (see the font lists in {__file__})")
    table = layouts()
    images = np.zeros((count, HEIGHT, WIDTH, 3), np.uint8)
    labels = []
    for i in range(count):
        rng = random.Random(seed * 1_000_003 + i)
        images[i], label = sample(rng, fonts, table)
        labels.append(label)
    return images, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", help=".npz with images (N,32,192,3 RGB) and labels")
    ap.add_argument("--fonts", default="train", help="'train', 'test' or a comma-separated list of font files")
    ap.add_argument("--png", help="also write each sample as DIR/NNNNN_LABEL.png")
    ap.add_argument("--jpg", help="also write each sample as DIR/NNNNN_LABEL.jpg (quality 95, 4:4:4)")
    a = ap.parse_args()
    fonts = TRAIN_FONTS if a.fonts == "train" else TEST_FONTS if a.fonts == "test" else a.fonts.split(",")
    images, labels = render(a.seed, a.count, fonts)
    if a.out:
        np.savez_compressed(a.out, images=images, labels=np.array(labels))
    for folder, ext, opts in ((a.png, "png", {}), (a.jpg, "jpg", {"quality": 95, "subsampling": 0})):
        if folder:
            os.makedirs(folder, exist_ok=True)
            for i, (im, lb) in enumerate(zip(images, labels)):
                Image.fromarray(im).save(os.path.join(folder, f"{i:05d}_{lb}.{ext}"), **opts)


if __name__ == "__main__":
    main()
