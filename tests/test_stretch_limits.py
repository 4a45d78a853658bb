"""Each tile's stretch limits are worked out once per run, however many chips and workers read it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from distributed import LocalCluster

from footprints.flows.aoi import aoi_flow
from footprints.geo.layouts import find_tiles
from footprints.geo.stores import LocalStore
from footprints.geo.synth import write_scene
from footprints.tasks import chip_work


@pytest.mark.slow
def test_each_tile_is_stretched_once_per_run_across_workers(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "scene")
    write_scene(store.write_bytes, 4, seed=2, tile_size=320)
    tile_set = find_tiles(store)
    # A cluster whose workers are threads of this process (the flow's own runs processes): a
    # counting wrapper round the real function sees every worker's calls.
    counted: Counter[str] = Counter()
    real = chip_work.tile_limits

    def counting(path: Path, nodata: float | None, name: str) -> chip_work.Limits | None:
        counted[path.name] += 1
        return real(path, nodata, name)

    monkeypatch.setattr(chip_work, "tile_limits", counting)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        record = aoi_flow(
            tile_set.bbox(),
            str(store.root),
            str(tmp_path / "out.gpkg"),
            chip_size=128,
            overlap=32,
            dask_address=cluster.scheduler_address,
            progress=False,
        )
    # 128 px chips over 320 px tiles: every tile is read by several chips, on both workers.
    assert record.chips >= 4 * len(tile_set.tiles)
    assert len(record.workers) == 2
    assert sorted(counted) == sorted(Path(t.image_key).name for t in tile_set.tiles)
    assert set(counted.values()) == {1}, counted
