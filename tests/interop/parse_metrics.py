"""Parses a Prometheus text exposition (stdin) with the prometheus_client package's parser, as
Prometheus would read it, and prints its samples as JSON: [[name, {labels}, value], ...].
With the argument `openmetrics`, the text must be OpenMetrics and the package's strict
OpenMetrics parser reads it. Exits non-zero if the text does not parse."""
import json
import math
import sys

if sys.argv[1:] == ["openmetrics"]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        value = sample.value
        if math.isinf(value):
            value = "+Inf" if value > 0 else "-Inf"
        samples.append([sample.name, sample.labels, value])
json.dump(samples, sys.stdout)
