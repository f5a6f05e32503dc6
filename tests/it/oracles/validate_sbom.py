"""Validates an SBOM with its format's own tools: CycloneDX 1.5 JSON against the schema that
cyclonedx-python-lib ships (strict), SPDX 2.3 JSON with spdx-tools' parser and validator.
Usage: validate_sbom.py cyclonedx|spdx FILE. Exit 0 when valid, 1 with the reasons when not,
2 when the validators are not installed (python3 -m pip install
'cyclonedx-python-lib[json-validation]' spdx-tools)."""
import sys

kind, path = sys.argv[1], sys.argv[2]
try:
    if kind == "cyclonedx":
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    else:
        from spdx_tools.spdx.parser.parse_anything import parse_file
        from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
except ImportError as e:
    print(f"the {kind} validator is not installed: {e}", file=sys.stderr)
    sys.exit(2)

if kind == "cyclonedx":
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(path).read())
    if errors:
        print(f"invalid CycloneDX 1.5: {errors}", file=sys.stderr)
        sys.exit(1)
else:
    document = parse_file(path)
    messages = validate_full_spdx_document(document, "SPDX-2.3")
    if messages:
        for message in messages:
            print(f"invalid SPDX 2.3: {message.validation_message}", file=sys.stderr)
        sys.exit(1)
print(f"valid {kind}")
