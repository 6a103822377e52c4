"""Writes the Jinja fuzz seeds (corpus/jinja/feature-NN.jinja) from the feature fixtures that
jinja2 generated (Tests/JinjaTests/Fixtures/jinja-features.json); the chat templates in
Tests/JinjaTests/Fixtures/chat-templates are read as a second corpus directory as they are."""
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent
features = json.loads((here.parent / "JinjaTests" / "Fixtures" / "jinja-features.json").read_text())["features"]
out = here / "corpus" / "jinja"
out.mkdir(parents=True, exist_ok=True)
for index, feature in enumerate(features):
    (out / f"feature-{index:02d}.jinja").write_text(feature["template"])
print(f"wrote {len(features)} seeds to {out}")
