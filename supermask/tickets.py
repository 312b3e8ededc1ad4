"""Deprecated (0.2): ticket files are :mod:`supermask.ticket_files`, exports :mod:`supermask.exports`.

Kept for one release so that code written against 0.2.0 keeps running; importing it warns once.
Nothing in the package imports it.
"""

import warnings

from .exports import (EXPORT_FORMATS, EXPORTS, PROVENANCE_KEY, compact_ticket, evaluate_export,  # noqa: F401
                      export_provenance, export_run, export_target, load_export, load_ticket, load_torch_prune,
                      read_provenance, torch_prune_state_dict)
from .layout import MASK_FILE, META_FILE, MODEL_FILE  # noqa: F401
from .ticket_files import (folded_state_dict, layer_of, library_versions, load_masks, plain_model,  # noqa: F401
                           read_ticket, regenerated_keys, save_masks, save_ticket, ticket_state, weights_checksum)

warnings.warn("supermask.tickets is deprecated: ticket files are in supermask.ticket_files, exports in "
              "supermask.exports", DeprecationWarning, stacklevel=2)
