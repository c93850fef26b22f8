"""A local web page where a person moves a genre "equalizer" and watches recommendations change.

The paper's section 8 steers a sequential recommender by editing genre-aligned SAE features;
this package puts one slider per genre in front of that machinery:

- :mod:`~mechrec_recsys.equalizer.controls`: the sliders (each genre's SAE feature chosen by
  :func:`mechrec_recsys.steering.select_genre_features`, optional probe directions) and how a
  slider value becomes an edit;
- :mod:`~mechrec_recsys.equalizer.items`: titles, years, genres and genre shares of lists;
- :mod:`~mechrec_recsys.equalizer.session`: :class:`EqualizerSession`, a run + SAE answering
  "this user's top-K under these slider values" (thread-safe, cached per user);
- :mod:`~mechrec_recsys.equalizer.server`: the HTTP server (standard library only);
- :mod:`~mechrec_recsys.equalizer.page`: the self-contained HTML page shipped in ``static/``.

Start it with ``mechrec serve RUN_DIR --sae SAE`` (see ``docs/equalizer.md``).
"""

from mechrec_recsys.equalizer.controls import (
    DEFAULT_MAX_VALUE,
    DEFAULT_PROBE_ROWS,
    METHODS,
    Equalizer,
    GenreControl,
    build_controls,
    default_genres,
)
from mechrec_recsys.equalizer.errors import EqualizerInputError, UnknownUserError
from mechrec_recsys.equalizer.items import ItemTable
from mechrec_recsys.equalizer.page import page_bytes
from mechrec_recsys.equalizer.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    EqualizerServer,
    make_server,
    serve_in_background,
)
from mechrec_recsys.equalizer.session import EqualizerSession

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_VALUE",
    "DEFAULT_PORT",
    "DEFAULT_PROBE_ROWS",
    "METHODS",
    "Equalizer",
    "EqualizerInputError",
    "EqualizerServer",
    "EqualizerSession",
    "GenreControl",
    "ItemTable",
    "UnknownUserError",
    "build_controls",
    "default_genres",
    "make_server",
    "page_bytes",
    "serve_in_background",
]
