"""The keys of one OUTSCALE account in one Region, as the layer consumes them.

The vault bridge builds these from stored (encrypted) keys; this module never
reads keys from anywhere else. The secret never appears in repr/str, so a
Credentials that ends up in a log line, a traceback or an rq job repr leaks
nothing but a masked access key id.
"""

from dataclasses import dataclass, field

from outscale.regions import REGIONS


def mask_access_key(access_key: str) -> str:
    """Show enough of an access key id to recognise it, never the whole id."""
    if len(access_key) <= 8:
        return "****"
    return f"{access_key[:4]}…{access_key[-4:]}"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"Unknown OUTSCALE Region {self.region!r}; expected one of {', '.join(REGIONS)}.")
        if not self.access_key or not self.secret_key:
            raise ValueError("Both the access key and the secret key are required.")

    @property
    def masked_access_key(self) -> str:
        return mask_access_key(self.access_key)

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.masked_access_key!r}, secret_key='***', region={self.region!r})"

    __str__ = __repr__

    def __getstate__(self):
        # Pickling would copy the secret into job payloads or caches; the
        # portal passes ids to jobs and re-reads keys from the vault instead.
        raise TypeError("Credentials are not picklable: pass ids and re-read them from the vault.")
