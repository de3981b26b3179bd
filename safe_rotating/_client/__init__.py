"""``LogServerHandler``'s machinery: the sender thread and the spool."""
