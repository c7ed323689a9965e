"""De-identification after DICOM PS3.15 Annex E: the Basic Profile and its options, driven by
Table E.1-1 (shipped in `data/`), keyed UIDs and pseudonyms, and a residual leak scan.

`deidentify.Anonymizer` is the library entry point (one data set or file at a time);
`run.anonymize_sources` runs it over files, folders and zips into an output folder.
"""
