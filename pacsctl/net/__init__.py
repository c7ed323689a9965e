"""DICOM networking over pynetdicom. Takes callables; imports no capability package (archive,
ingest, remote, node, ...).

- `scp`: `start_scp(ScpHandlers, ScpOptions) -> RunningScp` (Verification, Storage of any SOP
  class as received, Patient/Study Root FIND, MOVE, GET; allow-list, TLS, audit events).
- `scu`: `echo`, `store`, `find`, `move`, `get` against a node (`pacsctl.config.Node` shape).
- `types`: the data passed across (StoreRequest, ScpOptions, TlsOptions, StoreResult...).
- `sending`: which presentation contexts to propose; sending a file as stored or decompressed.
- `tls`: SSL contexts. `setup`: process-wide pynetdicom settings (no identifiers in logs).
- `fastpath`: measured fixes to pynetdicom's hot path (faststore, pdata, receive, tuning),
  checked against the installed pynetdicom and behind one switch (`ScpOptions.fast_path`,
  `PACSCTL_FAST_PATH=0`); `fastpath.encoding`: the hand-written little-endian elements.
"""
