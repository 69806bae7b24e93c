"""How the avatar looks: the photo's own lips at every opening, a soft-edged mouth interior, mouth shapes
that follow the sounds. Measured on both sample faces; the contact sheet of the shapes is saved under
``test-artifacts/`` (git-ignored) for a person to look at."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from actors.renderer import cli

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_contact_sheet_of_the_mouth_shapes_is_saved(avatars):
    from actors.renderer import OutputOptions

    sheet = cli.pose_sheet(list(avatars.items()), cli.SHAPE_POSES, OutputOptions(width=256, height=256))
    n = len(cli.SHAPE_POSES)
    assert sheet.shape == (2 * (256 + 192), n * 256, 3)
    ARTIFACTS.mkdir(exist_ok=True)
    cli.save_png(str(ARTIFACTS / "mouth_shapes.png"), sheet)
    # every shape differs from rest in the close-ups
    for row in (256, 2 * 256 + 192):
        zoom = sheet[row : row + 192].astype(float)
        assert all(np.abs(zoom[:, i * 256 : (i + 1) * 256] - zoom[:, :256]).mean() > 1 for i in range(1, n))
