"""Partners' counters: anonymous counts per interval and direction, kept and shared under the partners'
agreements."""
