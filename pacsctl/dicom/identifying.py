"""Patient-identifying attributes: the one set that logs, errors and the audit trail withhold.

An error about a query value names the keyword and what is wrong; it quotes the value only when
the keyword cannot identify a patient (the message is also what a `--debug` traceback prints).
"""

from __future__ import annotations

from typing import Any

#: Keywords whose values identify a patient (names, IDs, birth date, contact details):
#: never written to logs, error messages, tracebacks or the audit log.
PATIENT_IDENTIFYING: frozenset[str] = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "MedicalRecordLocator",
        "ResponsiblePerson",
        "PersonName",
        "PatientInsurancePlanCodeSequence",
    }
)


def is_identifying(keyword: str) -> bool:
    """True when values of `keyword` may identify a patient."""
    return keyword in PATIENT_IDENTIFYING


def shown_value(keyword: str, value: Any) -> str:
    """`value` quoted for an error message about `keyword`, or "the value" when it identifies a
    patient."""
    return "the value" if is_identifying(keyword) else repr(value)
