"""Checks of our own for the API fuzz test (loaded through SCHEMATHESIS_HOOKS=hooks)."""

import schemathesis


@schemathesis.check
def only_documented_503(ctx, response, case):
    """A 503 is an answer only when nothing in the pool is eligible; any other is an error."""
    if response.status_code == 503:
        code = response.json().get("code")
        assert code == "pool_exhausted", f"503 with code {code!r}"
    return None
