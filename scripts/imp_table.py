"""Print the per-level IMP table (mean ± std over seeds, one column group per control) of a runs root.

    python scripts/imp_table.py runs/
"""

import sys

from supermask.report import imp_level_table

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/imp_table.py RUNS_ROOT")
    print(imp_level_table(sys.argv[1]))
