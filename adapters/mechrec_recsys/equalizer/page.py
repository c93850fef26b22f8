"""The equalizer's web page: one self-contained HTML file shipped inside this package.

The file (``static/equalizer.html``) carries its CSS and JavaScript inline and loads nothing
from other hosts, so the page works offline and under a strict content security policy.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

PAGE_RESOURCE = "static/equalizer.html"


@lru_cache(maxsize=1)
def page_bytes() -> bytes:
    """The page as UTF-8 bytes, read once from the installed package.

    Raises:
        FileNotFoundError: the package was installed without its HTML file (a packaging
            bug: ``package-data`` must include ``static/*.html``).
    """
    resource = resources.files("mechrec_recsys.equalizer").joinpath(PAGE_RESOURCE)
    try:
        return resource.read_bytes()
    except (FileNotFoundError, OSError) as exc:
        raise FileNotFoundError(
            f"the equalizer page {PAGE_RESOURCE} is missing from the installed "
            "mechrec_recsys.equalizer package; reinstall mechrec (pip install -e .)"
        ) from exc
