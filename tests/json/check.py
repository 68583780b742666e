"""Validates tally's --json output against the published JSON Schema (docs/schema/), with the
`jsonschema` package from PyPI (draft 2020-12, formats checked), not with code of this project.

    check.py SCHEMA FILE...    each FILE holds JSON lines; every line must be one valid record

Prints one line per invalid record (FILE:LINE: where: why) and exits 1; else prints
`N records valid` and exits 0.
"""
import json
import sys

import jsonschema


def main() -> int:
    schema_path, files = sys.argv[1], sys.argv[2:]
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    valid, bad = 0, 0
    for name in files:
        with open(name, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    print(f"{name}:{number}: not JSON: {e}")
                    bad += 1
                    continue
                errors = list(validator.iter_errors(record))
                for e in errors:
                    print(f"{name}:{number}: {e.json_path}: {e.message[:300]}")
                bad += bool(errors)
                valid += not errors
    if bad:
        print(f"{bad} invalid records, {valid} valid")
        return 1
    print(f"{valid} records valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
