"""End-entity certificates signed by the fleet CA: one for the broker, one per principal.

A client certificate's common name is the principal's name. The broker's TLS listener is configured
with ``use_identity_as_username``, so that name, not whatever username the client sends, is what the
ACL is applied to: a stolen password alone no longer opens a TLS connection, and a certificate only ever
carries its own principal's rights.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet.security.tls.authority import CLOCK_SKEW
from edgefleet.security.tls.pem import Issued, cert_pem, key_pem, new_key

LEAF_DAYS = 825


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _issue(ca: Issued, common_name: str, usage: x509.ObjectIdentifier, sans: Sequence[str], days: int,
           now: dt.datetime | None) -> Issued:
    now = now or dt.datetime.now(dt.timezone.utc)
    ca_cert, ca_key = ca.certificate(), ca.private_key()
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in sans]), critical=False)
    return Issued(cert_pem(builder.sign(ca_key, hashes.SHA256())), key_pem(key))


def issue_server(ca: Issued, hosts: Sequence[str], *, days: int = LEAF_DAYS,
                 now: dt.datetime | None = None) -> Issued:
    """The broker's certificate, valid for each of ``hosts`` (DNS names or IP addresses) that clients
    put in their ``[mqtt] host``; clients check the name they connect to against this list."""
    if not hosts:
        raise ValueError("the broker certificate needs at least one host name or address")
    return _issue(ca, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, hosts, days, now)


def issue_client(ca: Issued, principal: str, *, days: int = LEAF_DAYS, now: dt.datetime | None = None) -> Issued:
    """A client certificate whose common name is ``principal`` (the MQTT username it stands for)."""
    return _issue(ca, principal, ExtendedKeyUsageOID.CLIENT_AUTH, (), days, now)
