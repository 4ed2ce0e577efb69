// Produced by scripts/generate-go-offsets.sh; regenerate, do not edit by hand.
let goOffsetsTableJSON = """
{"lines": {}}
"""
