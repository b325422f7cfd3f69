"""Snakemake adapter: aggregate probe results into grid and best tables (saeprobe.tables)."""
from pathlib import Path

from saeprobe.io import setup_logging
from saeprobe.tables import best_both, grid, write_table

log = setup_logging(snakemake.log[0])
out = Path(snakemake.output[0]).parent
g = grid(snakemake.input)
write_table(g, out / "grid", "All probes (CV = stratified CV on the train split; test = held-out test split)")
b = best_both(g)
write_table(b, out / "best", "Best configuration per dataset and model: selected_on = cv is saeprobe's choice (CV macro "
            "F1 on the train split); selected_on = test repeats MOSAIC's choice on the test score, for comparison")
log.info("%d probes aggregated; best configurations:\n%s", g.height, b)
