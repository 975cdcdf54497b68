"""The fleet's own certificate authority: it signs the broker's certificate and one client certificate
per principal, and clients and broker trust nothing else. Its key signs every future certificate, so it
belongs offline once the certificates are issued."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from edgefleet.security.tls.pem import Issued, cert_pem, key_pem, new_key

CA_DAYS = 3650
CLOCK_SKEW = dt.timedelta(minutes=5)  # valid slightly before issue, for devices whose clocks lag


def create_ca(common_name: str, *, days: int = CA_DAYS, now: dt.datetime | None = None) -> Issued:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert_pem(cert), key_pem(key))
