"""Upgraded streams between two plain sockets, moved by the kernel with splice(2).

An exec or attach stream through the gate is copied twice per direction (the daemon's
socket into the gate, the gate into the client's socket) and costs an asyncio read,
write and drain per piece. When neither side is TLS, the bytes can go socket → pipe →
socket inside the kernel: the gate only reacts to readiness and never holds the data.
Half-close is kept as in :func:`dockergate.proxy.connection.pump`: the end of one
direction shuts down the writing side of the other socket once the pipe is empty, and
the other direction goes on until its own end. There is no idle timeout.

The asyncio transports stay the owners of the sockets (they close them afterwards);
for the stream's lifetime their reading is paused and the gate works on duplicates
of the descriptors, so no byte is read by both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket

from dockergate.proxy.http import Writer

CHUNK = 1 << 20  # at most this much per splice; the pipe holds what the kernel allows
PIPE_SIZE = 1 << 20  # asked of F_SETPIPE_SZ (capped by /proc/sys/fs/pipe-max-size)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def plain_socket(reader: asyncio.StreamReader, writer: Writer) -> socket.socket | None:
    """The socket under an asyncio stream, if bytes can be spliced to and from it: a
    plain (not TLS) stream with nothing buffered, no end seen and nothing waiting to be
    sent. None otherwise (then the gate copies through asyncio as usual)."""
    if not hasattr(os, "splice") or type(writer) is not asyncio.StreamWriter:
        return None
    if writer.get_extra_info("ssl_object") is not None:
        return None
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
        return None
    if reader.at_eof() or reader.exception() is not None or writer.is_closing():
        return None
    if writer.transport.get_write_buffer_size():
        return None
    return sock  # type: ignore[no-any-return]


class _Direction:
    """One way of the stream: ``src`` → pipe → ``dst``, driven by readiness callbacks."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket
    ) -> None:
        self.loop = loop
        self.src, self.dst = src, dst
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.pipe_w, F_SETPIPE_SZ, PIPE_SIZE)
        self.pending = 0  # bytes in the pipe, not yet in dst
        self.eof = False
        self.reading = False
        self.writing = False
        self.done: asyncio.Future[bool] = loop.create_future()

    def start(self) -> None:
        self._read_on()

    def _read_on(self) -> None:
        if not self.reading:
            self.loop.add_reader(self.src.fileno(), self._on_readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src.fileno())
            self.reading = False

    def _on_readable(self) -> None:
        try:
            moved = os.splice(self.src.fileno(), self.pipe_w, CHUNK, flags=FLAGS)
        except BlockingIOError:
            return
        except OSError:
            self._finish(False)
            return
        if moved == 0:
            self.eof = True
            self._read_off()
        self.pending += moved
        self._flush()

    def _on_writable(self) -> None:
        self._flush()

    def _flush(self) -> None:
        """Empty the pipe into dst; when dst is full, stop reading src until it drains
        (the kernel's buffers are the only ones: back-pressure reaches the sender)."""
        while self.pending:
            try:
                moved = os.splice(self.pipe_r, self.dst.fileno(), self.pending, flags=FLAGS)
            except BlockingIOError:
                self._read_off()
                if not self.writing:
                    self.loop.add_writer(self.dst.fileno(), self._on_writable)
                    self.writing = True
                return
            except OSError:
                self._finish(False)
                return
            self.pending -= moved
        if self.writing:
            self.loop.remove_writer(self.dst.fileno())
            self.writing = False
        if self.eof:
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                self._finish(False)
                return
            self._finish(True)
        else:
            self._read_on()

    def _finish(self, ok: bool) -> None:
        self.stop()
        if not self.done.done():
            self.done.set_result(ok)

    def stop(self) -> None:
        self._read_off()
        if self.writing:
            self.loop.remove_writer(self.dst.fileno())
            self.writing = False

    def close(self) -> None:
        self.stop()
        for fd in (self.pipe_r, self.pipe_w):
            with contextlib.suppress(OSError):
                os.close(fd)


async def splice_streams(
    client_reader: asyncio.StreamReader,
    client_writer: Writer,
    up_reader: asyncio.StreamReader,
    up_writer: Writer,
) -> bool:
    """Relay an upgraded stream in the kernel. False (nothing done) if either side is not
    a plain socket; True once the stream has ended (both ways, or one side broke)."""
    client_sock = plain_socket(client_reader, client_writer)
    up_sock = plain_socket(up_reader, up_writer)
    if client_sock is None or up_sock is None:
        return False
    assert isinstance(client_writer, asyncio.StreamWriter)
    assert isinstance(up_writer, asyncio.StreamWriter)
    # No more reads through asyncio; whatever it already read goes first, through it.
    client_writer.transport.pause_reading()  # type: ignore[attr-defined]
    up_writer.transport.pause_reading()  # type: ignore[attr-defined]
    early_up = _take_buffered(client_reader)
    early_down = _take_buffered(up_reader)
    if early_up:
        up_writer.write(early_up)
    if early_down:
        client_writer.write(early_down)
    await asyncio.gather(up_writer.drain(), client_writer.drain())

    loop = asyncio.get_running_loop()
    c = socket.socket(fileno=os.dup(client_sock.fileno()))
    u = socket.socket(fileno=os.dup(up_sock.fileno()))
    up = _Direction(loop, c, u)
    down = _Direction(loop, u, c)
    try:
        up.start()
        down.start()
        pending = {up.done, down.done}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not all(f.result() for f in done):
                break  # one side broke: end both
    finally:
        up.close()
        down.close()
        c.close()  # the duplicates; the transports close the originals
        u.close()
    return True


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    data = bytes(buffer)
    buffer.clear()
    return data
