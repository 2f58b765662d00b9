"""A server TLS certificate read from files, picked up again when the files change (cert-manager rotation).

Each reload builds a fresh SSLContext and only swaps it in once the new cert and key loaded together; the
listening context's SNI callback (OpenSSL calls it on every handshake, with or without SNI) hands each new
handshake the current one. Reloading into the live context instead is unsafe: a cert that does not match the
loaded key (the files caught mid-rotation) drops the key and every later handshake fails.

    tls = ReloadingTlsContext(TlsFiles("tls.crt", "tls.key"), logger)   # ConfigError if they do not load
    await loop.create_server(factory, host, port, ssl=tls.listening)
    watcher = asyncio.create_task(tls.watch(every=2.0))
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from sidecar.errors import ConfigError, one_line


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: str  # PEM: the certificate, then any intermediates
    key: str  # PEM: the private key


def load_server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS 1.2+ server context for these files; ConfigError (one line) if they do not load."""
    for flag, path in (("--cert", files.cert), ("--key", files.key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:  # OpenSSL's own message would not say which file
            raise ConfigError(f"{flag} {path}", "", "", f"cannot read: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # An encrypted key would make OpenSSL prompt on the terminal; a daemon must fail instead.
        context.load_cert_chain(files.cert, files.key, password=_no_password)
    except OSError as exc:  # ssl.SSLError, or the files vanished since the check above
        problem = f"not a PEM certificate chain and its unencrypted private key: {one_line(str(exc))}"
        raise ConfigError(f"--cert {files.cert} --key {files.key}", "", "", problem) from None
    return context


def _no_password() -> bytes:
    return b""


class ReloadingTlsContext:
    """The serving certificate, swapped for new handshakes when the files' contents change."""

    def __init__(self, files: TlsFiles, logger: logging.Logger) -> None:
        self.files = files
        self.logger = logger
        self.current = load_server_context(files)
        self.listening = load_server_context(files)
        self._loaded = self._read()
        self._rejected: tuple[bytes, bytes] | None = None
        self._unreadable = False
        self.listening.sni_callback = self._use_current

    def _use_current(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self.current

    def _read(self) -> tuple[bytes, bytes]:
        with open(self.files.cert, "rb") as cert, open(self.files.key, "rb") as key:
            return cert.read(), key.read()

    def reload_if_changed(self) -> bool:
        """Load the files again if their contents changed; True when a new certificate is now served.

        Files that do not load (half-written, a cert without its key yet) keep the old certificate in use;
        they are logged once and tried again on the next change.
        """
        try:
            contents = self._read()
        except OSError as exc:
            if not self._unreadable:
                self._unreadable = True
                self.logger.warning("TLS files unreadable, keeping the current certificate: %s", one_line(str(exc)))
            return False
        self._unreadable = False
        if contents in (self._loaded, self._rejected):
            return False
        try:
            context = load_server_context(self.files)
        except ConfigError as exc:
            self._rejected = contents
            self.logger.warning("%s; keeping the current certificate", exc)
            return False
        # Contents read before the load: if the files changed in between, the next check loads them again.
        self.current, self._loaded, self._rejected = context, contents, None
        self.logger.info("TLS certificate reloaded from %s", self.files.cert)
        return True

    async def watch(self, every: float) -> None:
        """Check the files every `every` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every)
            try:
                self.reload_if_changed()
            except Exception:  # a dead watcher would silently serve an expiring cert forever
                self.logger.exception("TLS certificate check failed")
