"""What crosses a socket: frames, the protocol-2 batch, the restricted unpickler, syslog, and
the escaping of control characters in lines."""
