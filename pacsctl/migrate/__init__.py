"""PACS-to-PACS migrations that resume and prove every instance arrived (`pacsctl migrate`),
and reconciliation between two nodes or a node and the archive (`pacsctl diff`)."""
