"""Writes the built-in pose presets (assets/poses/*.json) from a small 2-D stick-figure model.

Run:  python3 tools/poses/make_presets.py   (standard library only)

Format (documented in assets/poses/README.md): {"name": str, "people": [[[x, y] | null] * 18, ...]},
OpenPose body-18 in COCO order, x and y normalised to the panel (0..1, y down).
Limb angles below are degrees from "hanging straight down", positive = away from the body's midline.
"""
import json
import math
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "assets", "poses")
NOSE, NECK, RSH, REL, RWR, LSH, LEL, LWR, RHIP, RKNEE, RANK, LHIP, LKNEE, LANK, REYE, LEYE, REAR, LEAR = range(18)


def limb(start, angle, length, side):
    """side = -1 for the person's right (image left when facing the viewer), +1 for the left."""
    a = math.radians(angle)
    return [start[0] + side * math.sin(a) * length, start[1] + math.cos(a) * length]


def person(cx, hip_y, s, arms=((10, 10), (10, 10)), legs=((3, 3), (3, 3)), thigh=0.22, shin=0.22,
           view="front", mirror=False):
    """A figure with hip centre (cx, hip_y) and height ~s. arms/legs: ((upper, lower) right, (upper, lower) left)."""
    k = [None] * 18
    hip = [cx, hip_y]
    neck = [cx, hip_y - 0.32 * s]
    k[NECK] = neck
    k[RSH], k[LSH] = [cx - 0.1 * s, neck[1]], [cx + 0.1 * s, neck[1]]
    k[RHIP], k[LHIP] = [cx - 0.06 * s, hip[1]], [cx + 0.06 * s, hip[1]]
    for (sh, el, wr, side, (ua, fa)) in ((RSH, REL, RWR, -1, arms[0]), (LSH, LEL, LWR, 1, arms[1])):
        k[el] = limb(k[sh], ua, 0.15 * s, side)
        k[wr] = limb(k[el], fa, 0.14 * s, side)
    for (hp, kn, an, side, (ta, sa)) in ((RHIP, RKNEE, RANK, -1, legs[0]), (LHIP, LKNEE, LANK, 1, legs[1])):
        k[kn] = limb(k[hp], ta, thigh * s, side)
        k[an] = limb(k[kn], sa, shin * s, side)
    nose = [cx, neck[1] - 0.1 * s]
    if view == "front":
        k[NOSE] = nose
        k[REYE], k[LEYE] = [cx - 0.025 * s, nose[1] - 0.025 * s], [cx + 0.025 * s, nose[1] - 0.025 * s]
        k[REAR], k[LEAR] = [cx - 0.055 * s, nose[1] - 0.015 * s], [cx + 0.055 * s, nose[1] - 0.015 * s]
    elif view == "back":  # seen from behind: no face, ears only, sides swapped
        k[REAR], k[LEAR] = [cx + 0.055 * s, nose[1] - 0.015 * s], [cx - 0.055 * s, nose[1] - 0.015 * s]
        for a, b in ((RSH, LSH), (REL, LEL), (RWR, LWR), (RHIP, LHIP), (RKNEE, LKNEE), (RANK, LANK)):
            k[a], k[b] = k[b], k[a]
    elif view in ("right", "left"):  # profile facing image right / left
        d = 1 if view == "right" else -1
        k[NOSE] = [cx + d * 0.06 * s, nose[1]]
        eye, ear = (LEYE, LEAR) if d > 0 else (REYE, REAR)
        k[eye] = [cx + d * 0.035 * s, nose[1] - 0.025 * s]
        k[ear] = [cx - d * 0.02 * s, nose[1] - 0.015 * s]
        for a in (RSH, LSH):
            k[a] = [cx + (0.02 if a == LSH else -0.02) * s * d, neck[1]]
        for a in (RHIP, LHIP):
            k[a] = [cx + (0.015 if a == LHIP else -0.015) * s * d, hip[1]]
    if mirror:
        k = [[2 * cx - p[0], p[1]] if p else None for p in k]
        for a, b in ((RSH, LSH), (REL, LEL), (RWR, LWR), (RHIP, LHIP), (RKNEE, LKNEE), (RANK, LANK),
                     (REYE, LEYE), (REAR, LEAR)):
            k[a], k[b] = k[b], k[a]
    return k


def rotate(k, deg, pivot):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return [[pivot[0] + (p[0] - pivot[0]) * c - (p[1] - pivot[1]) * s,
             pivot[1] + (p[0] - pivot[0]) * s + (p[1] - pivot[1]) * c] if p else None for p in k]


PRESETS = {
    "standing": ("Standing", [person(0.5, 0.55, 0.8)]),
    "walking": ("Walking", [person(0.5, 0.55, 0.8, arms=((-20, -10), (25, 35)), legs=((-8, 5), (22, 10)))]),
    "running": ("Running", [person(0.5, 0.55, 0.8, arms=((45, 140), (-30, 60)), legs=((50, -40), (-25, 10)))]),
    # profile, facing right: thighs forward (+x), shins down, hands on the knees
    "sitting": ("Sitting", [person(0.45, 0.6, 0.8, view="right", arms=((-25, -75), (25, 75)),
                                   legs=((-90, 0), (90, 0)), thigh=0.2)]),
    "kneeling": ("Kneeling", [person(0.5, 0.62, 0.8, arms=((10, 10), (10, 10)), legs=((5, 80), (5, 80)),
                                     shin=0.08)]),
    "lying": ("Lying down", [rotate(person(0.5, 0.5, 0.7, arms=((8, 8), (8, 8))), -90, (0.5, 0.6))]),
    "waving": ("Waving", [person(0.5, 0.55, 0.8, arms=((130, 165), (10, 10)))]),
    "pointing": ("Pointing", [person(0.5, 0.55, 0.8, arms=((90, 90), (8, 8)))]),
    "arms_crossed": ("Arms crossed", [person(0.5, 0.55, 0.8, arms=((12, -100), (12, -100)))]),
    "hands_on_hips": ("Hands on hips", [person(0.5, 0.55, 0.8, arms=((45, -45), (45, -45)))]),
    "looking_back": ("Looking back", [person(0.5, 0.55, 0.8, view="back")]),
    "jumping": ("Jumping", [person(0.5, 0.45, 0.8, arms=((150, 170), (150, 170)), legs=((35, -25), (35, -25)))]),
    "cheering": ("Cheering", [person(0.5, 0.55, 0.8, arms=((120, 180), (120, 180)))]),
    "thinking": ("Thinking", [person(0.5, 0.55, 0.8, arms=((-15, -160), (10, -95)))]),
    "side_by_side": ("Two: side by side", [person(0.32, 0.57, 0.7), person(0.68, 0.57, 0.7)]),
    "facing_each_other": ("Two: facing each other", [person(0.34, 0.57, 0.7, view="right", arms=((8, 8), (8, 8))),
                                                     person(0.66, 0.57, 0.7, view="left", arms=((8, 8), (8, 8)))]),
    "hug": ("Two: hug", [person(0.42, 0.57, 0.7, view="right", arms=((-75, -110), (70, 105))),
                         person(0.58, 0.57, 0.7, view="left", arms=((75, 110), (-70, -105)))]),
    "handshake": ("Two: handshake", [person(0.36, 0.57, 0.7, arms=((-50, -70), (10, 10))),
                                     person(0.64, 0.57, 0.7, arms=((50, 70), (10, 10)))]),
}


def clamp(k):
    return [[round(min(max(p[0], 0.0), 1.0), 4), round(min(max(p[1], 0.0), 1.0), 4)] if p else None for p in k]


def main():
    os.makedirs(OUT, exist_ok=True)
    for key, (name, people) in PRESETS.items():
        with open(os.path.join(OUT, f"{key}.json"), "w") as f:
            json.dump({"name": name, "people": [clamp(p) for p in people]}, f, indent=None, separators=(",", ":"))
            f.write("\n")
    print(f"wrote {len(PRESETS)} presets to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
