#!/usr/bin/env python3
"""The floor for bronze ingestion: read a landing's CSV files into Arrow and
write one plain Delta table per source. No metadata, no checks, no typing.

Usage: ingest_floor.py LANDING WAREHOUSE

Reads, for each CSV source of gold's default models/sources.toml, every
day folder's file with pyarrow.csv (all columns as strings: typed reads fail
on the landing's dirty values), keeps the source's declared columns, and
writes it with deltalake.write_deltalake. Prints one JSON document:
rows, seconds, rows_per_s.
"""
import glob
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.csv as pacsv
from deltalake import write_deltalake

SOURCES = {
    "members": ("members.csv", ["MemberID", "Name", "DOB", "Gender", "Region", "PlanType", "EffectiveDate", "Email", "IsActive", "LastUpdated"]),
    "diagnosis_ref": ("diagnosis_ref.csv", ["Code", "Description"]),
    "claims_batch": ("claims_batch*.csv", ["ClaimID", "MemberID", "ProviderID", "ClaimDate", "ServiceDate", "Amount", "Status", "ICD10Codes", "CPTCodes", "ClaimType", "SubmissionChannel", "Notes", "IngestTimestamp"]),
    "patients": ("patients.csv", ["patient_id", "first_name", "last_name", "age", "sex", "region", "bmi", "smoker", "children", "charges", "insurance_plan", "coverage_start_date", "timestamp"]),
    "ehr_claims": ("claims.csv", ["claim_id", "patient_id", "claim_amount", "claim_date", "diagnosis_code", "procedure_code", "claim_status"]),
    "medical_events": ("medical_events.csv", ["event_id", "patient_id", "event_date", "event_type", "medical_provider"]),
}


def main() -> int:
    landing, warehouse = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    rows = 0
    for name, (pattern, columns) in SOURCES.items():
        tables = []
        for path in sorted(glob.glob(os.path.join(landing, "*", pattern))):
            with open(path, encoding="utf-8-sig") as f:
                header = f.readline().rstrip("\r\n").split(",")
            opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in header}, include_columns=columns, strings_can_be_null=False)
            tables.append(pacsv.read_csv(path, convert_options=opts))
        if tables:
            table = pa.concat_tables(tables)
            rows += table.num_rows
            write_deltalake(os.path.join(warehouse, f"floor_{name}"), table)
    seconds = time.perf_counter() - start
    print(json.dumps({"step": "floor", "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
