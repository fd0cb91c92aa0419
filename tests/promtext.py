"""Read the Prometheus text format as a scraper does: over HTTP, parsed by prometheus_client."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# No proxy: an http_proxy in the environment must not intercept a loopback scrape.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Samples:
    """The samples of one exposition, by name and labels.

    The ``store`` label every storewarden sample carries is set aside in
    ``stores`` (the values seen) so tests name only the labels they are about.
    """

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: frozenset[str]
    stores: frozenset[str]

    def value(self, name: str, **labels: str) -> float:
        """Return the sample ``name{labels}``; fail naming what is there if it is missing."""
        key = (name, frozenset(labels.items()))
        if key not in self.values:
            present = sorted(
                f"{sample}{dict(sorted(pairs))}" for sample, pairs in self.values if sample == name
            )
            raise AssertionError(f"no sample {name}{labels}; present: {present}")
        return self.values[key]

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """Return the samples called ``name`` by the value of their ``label``."""
        return {
            dict(pairs)[label]: value
            for (sample, pairs), value in self.values.items()
            if sample == name and label in dict(pairs)
        }


def parse(text: str, *, keep_store: bool = False) -> Samples:
    """Parse an exposition in the text format; raise ValueError if it is not one."""
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families = set()
    stores = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            labels = dict(sample.labels)
            if not keep_store:
                stores.add(labels.pop("store", ""))
            key = (sample.name, frozenset(labels.items()))
            assert key not in values, f"{sample.name}{labels} appears twice"
            values[key] = sample.value
    return Samples(values, frozenset(families), frozenset(stores))


def scrape(port: int, address: str = "127.0.0.1") -> Samples:
    """Fetch http://ADDRESS:PORT/metrics and parse it."""
    with _OPENER.open(f"http://{address}:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode("utf-8"))
