"""`facecloak serve`: a local web page (and the small JSON API behind it) over `facecloak.protect`.

For people who do not use a terminal. The page and every asset it loads are served by this package (no CDN, no
build step, works offline); the server binds to 127.0.0.1 unless told otherwise, and then demands a random token.

Layout (a thin web shell over the library, like the CLI):

- `policy`  the strength levels shown on the page (one mapping level -> fill + budget) and the per-face verdict
            (one function, `face_verdicts`), both small so they can be swapped for the library's own.
- `jobs`    the job runner: decodes uploads with `facecloak.photos.io` (metadata dropped, decompression-bomb guard),
            queues them for ONE worker thread that holds the models, encodes the results in memory, forgets them.
- `app`     the Starlette application (routes, limits, token and host checks) served by uvicorn.

`jobs` and `policy` import no web framework; `app` needs the `serve` extra (`pip install 'facecloak[serve]'`).
"""

from __future__ import annotations
