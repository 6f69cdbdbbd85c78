"""Picture of simulated 2D Lissajous system-matrix components at mixing frequencies.

For the x receive channel the component at f = mx·fx + my·fy should look like the tensor
product of Chebyshev polynomials inside the drive FOV (dashed box): stripes for pure x
harmonics (my = 0), checkerboards for mixed ones. Along the receive direction x the factor is
U_{mx-1}(x/Ax) (second kind); along y the first-kind T_{my}(y/Ay) fits best (U and T agree up
to scale for my <= 1). Each panel shows the real part after removing the component's global
phase, with the correlations r(U·T) and r(U·U) against both models inside 90 % of the drive FOV.

    python -m benchmarks.plot_sm_components [--quick] [--output docs/images/sm_components.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import eval_chebyt, eval_chebyu  # noqa: E402

from napari_nirmpi.grid import Grid  # noqa: E402
from napari_nirmpi.simulate import Particles, Scanner, system_matrix  # noqa: E402


def component(S, scanner, grid, channel, mx, my):
    V = scanner.num_sampling_points
    kx, ky = (V // d for d in scanner.dividers)   # drive frequencies in bins
    k = mx * kx + my * ky
    img = S[channel, k].reshape(grid.shape)
    phase = np.angle(img.ravel()[np.argmax(np.abs(img))])
    return (img * np.exp(-1j * phase)).real, k


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="29x29 grid (the default is 49x49)")
    ap.add_argument("--output", default=None,
                    help="PNG path (default docs/images/sm_components.png; with --quick a temp file)")
    a = ap.parse_args(argv)
    if a.output is None:
        a.output = (os.path.join(tempfile.gettempdir(), "sm_components_quick.png") if a.quick else
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "images",
                                 "sm_components.png"))
    n = 29 if a.quick else 49
    scanner, particles = Scanner(ndim=2), Particles()
    grid = Grid((n, n), (29e-3, 29e-3))
    S = system_matrix(particles, scanner, grid, 4)
    f = scanner.frequencies()
    ax_fov, ay_fov = (fv / 2 for fv in scanner.drive_fov())
    cy, cx = grid.axis_centers()
    X, Y = cx / ax_fov, cy / ay_fov
    inside = (np.abs(Y)[:, None] < 0.9) & (np.abs(X)[None] < 0.9)
    ext = [grid.lower[1] * 1e3, grid.upper[1] * 1e3, grid.lower[0] * 1e3, grid.upper[0] * 1e3]

    fig, axes = plt.subplots(4, 4, figsize=(11, 11.6), constrained_layout=True)
    for i, my in enumerate(range(4)):
        for j, mx in enumerate(range(1, 5)):
            img, k = component(S, scanner, grid, 0, mx, my)
            ux = eval_chebyu(mx - 1, X)[None]
            if mx == 1 and my == 0:  # constant model: report the flatness instead
                rtxt = f"flat: std/mean = {img[inside].std() / abs(img[inside].mean()):.2f}"
            else:
                r_ut = abs(np.corrcoef(img[inside], (eval_chebyt(my, Y)[:, None] * ux)[inside])[0, 1])
                r_uu = abs(np.corrcoef(img[inside], (eval_chebyu(my, Y)[:, None] * ux)[inside])[0, 1])
                rtxt = f"r(U{mx - 1}·T{my}) = {r_ut:.2f}, r(U{mx - 1}·U{my}) = {r_uu:.2f}"
            ax = axes[i, j]
            v = np.abs(img).max()
            ax.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v, origin="lower", extent=ext)
            ax.add_patch(plt.Rectangle((-ax_fov * 1e3, -ay_fov * 1e3), 2 * ax_fov * 1e3, 2 * ay_fov * 1e3,
                                       fill=False, ls="--", lw=0.8, color="k"))
            ax.set_title(f"mx={mx}, my={my}: {f[k] / 1e3:.1f} kHz\n{rtxt}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 3:
                ax.set_xlabel("x / mm", fontsize=8)
            if j == 0:
                ax.set_ylabel("y / mm", fontsize=8)
    fig.suptitle(f"Simulated 2D Lissajous system matrix, receive channel x, {n}x{n} grid over 29 mm "
                 f"(25 nm cores, 1 T/m, 12 mT, f = 2.5 MHz/102, /96)\n"
                 f"Re(S) at f = mx·fx + my·fy; dashed: drive FOV; r: correlation with U(x)·T(y) and U(x)·U(y)",
                 fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    fig.savefig(a.output, dpi=90)
    print(f"wrote {os.path.abspath(a.output)}")


if __name__ == "__main__":
    main()
