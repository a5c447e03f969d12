"""The data pipeline on a planted corpus: survivors, counts, skips, tokenizer, packing, robustness."""

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from cogfm_hf.data import RecipeError, build, load_packed, load_recipe, unpack_documents
from cogfm_hf.data.pack import TASK_VOCAB
from cogfm_hf.data.pipeline import (
    EmptyBuildError,
    MinhashSignature,
    lsh_bands,
    minhash_config,
    simplify_words,
    work_dir,
)
from cogfm_hf.data.tokenizer import RESERVED_TOKENS
from cogfm_hf.paths import EVAL_DATA_DIR
from cogfm_hf.tasks import BACK

from .corpus_factory import make_corpus

EVAL_ITEM = json.loads((EVAL_DATA_DIR / "logic_depth4.jsonl").read_text().splitlines()[0])


def recipe_dict(root: Path, output: Path, **overrides) -> dict:
    recipe = {
        "output_dir": str(output),
        "workers": 1,
        "sources": [
            {"name": "prose", "type": "files", "path": str(root / "prose")},
            {"name": "code", "type": "files", "path": str(root / "code")},
            {
                "name": "reasoning",
                "type": "tasks",
                "num_examples": 120,
                "seed": 3,
                "mixture": [{"task": "chains", "retry_p": 0.4}, {"task": "arithmetic", "retry_p": 0.4}],
            },
        ],
        "clean": {"min_chars": 20, "max_chars": 50_000, "max_document_chars": 100_000},
        "tokenizer": {"vocab_size": 400, "train_chars": 100_000},
        "pack": {"seq_len": 256},
    }
    recipe.update(overrides)
    return recipe


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    expected = make_corpus(root, EVAL_ITEM)
    output = root / "out"
    build(recipe_dict(root, output), keep_work=True)
    work = next(root.glob(".out.build-*"))
    report = json.loads((output / "report.json").read_text())
    return {"root": root, "output": output, "work": work, "report": report, "expected": expected}


def read_jsonl_gz(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            records += [json.loads(line) for line in handle]
    return records


def test_planted_corpus_gives_exactly_the_expected_survivors_and_counts(built):
    report, expected = built["report"], built["expected"]
    assert sorted((s["location"], s["reason"]) for s in report["skips"]) == expected["skips"]
    removed = {}
    for reason, info in report["removed"].items():
        key = reason.split(":")[0] if reason.startswith("gopher_repetition") else reason
        removed[key] = removed.get(key, 0) + info["documents"]
        assert info["examples"], reason  # every reason shows what it removed
    assert removed == expected["removed"]
    assert report["removed"]["decontamination:contaminated"]["examples"][0]["contaminated_by"].startswith(
        "logic_depth4"
    )
    assert report["near_duplicate_clusters"] == {"clusters": 1, "documents_in_clusters": 2}
    corpus_out = read_jsonl_gz(built["work"] / "near_deduped")
    assert len(corpus_out) == expected["corpus_documents_out"]
    texts = {r["text"] for r in corpus_out}
    assert set(expected["good_texts"]) <= texts  # every good document survived, duplicates kept once
    sources = report["sources"]
    assert sources["prose"]["documents_out"] + sources["code"]["documents_out"] == expected["corpus_documents_out"]
    assert sources["reasoning"]["documents_out"] == 120 and sources["reasoning"]["removed"] == 0
    assert report["totals"]["skipped"] == 6
    shares = sum(info["token_share"] for info in sources.values())
    assert shares == pytest.approx(1.0)


def test_tokenizer_round_trips_splits_digits_and_reloads(built):
    tokenizer = AutoTokenizer.from_pretrained(built["output"] / "tokenizer")
    text = "The old farmer paid 12345 coins.\n\tdef f(x): return x ** 2  # ünïcode ✓"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    digits = tokenizer("907+12=919", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(digits) == list("907+12=919")
    assert [tokenizer.convert_tokens_to_ids(t) for t in RESERVED_TOKENS] == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    marked = tokenizer(f"x=<{BACK}", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids(BACK) in marked and len(tokenizer) == 400
    # lm-eval decodes generations with skip_special_tokens=True: the marker must survive it, EOS must not.
    assert tokenizer.decode(marked + [tokenizer.eos_token_id], skip_special_tokens=True) == f"x=<{BACK}"
    assert tokenizer("a b")["input_ids"][-1] != tokenizer.eos_token_id  # no EOS appended (lm-eval splits contexts)


def test_packing_preserves_every_token_and_boundary(built):
    tokenizer = AutoTokenizer.from_pretrained(built["output"] / "tokenizer")
    packed = load_packed(built["output"] / "packed")
    assert len(packed[0]["input_ids"]) == 256
    documents = read_jsonl_gz(built["work"] / "near_deduped") + read_jsonl_gz(built["work"] / "curated" / "task")
    expected = []
    for doc in documents:
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        expected += [tuple(ids[i : i + 256]) for i in range(0, len(ids), 256)]  # long documents are chunked
    found = [tuple(d.tolist()) for row in packed for d in unpack_documents(row)]
    assert sorted(found) == sorted(expected)
    report = built["report"]["packing"]
    assert report["tokens"] == sum(len(e) for e in expected)
    assert report["sequences"] == len(packed)


def test_error_mask_lines_up_with_retry_spans_token_for_token(built):
    tokenizer = AutoTokenizer.from_pretrained(built["output"] / "tokenizer")
    tasks = read_jsonl_gz(built["work"] / "curated" / "task")
    spans_by_text, chunks_of_long_documents = {}, set()
    for doc in tasks:
        ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) > 256:  # packed as chunks; checked whole only when it fits one sequence
            chunks_of_long_documents |= {tuple(ids[i : i + 256]) for i in range(0, len(ids), 256)}
            continue
        spans_by_text[tuple(ids)] = [doc["text"][s:e] for s, e in doc["metadata"]["error_spans"]]
    assert sum(map(len, spans_by_text.values())) > 50 and len(spans_by_text) > 80
    packed = load_packed(built["output"] / "packed")
    checked = set()
    for row in packed:
        ids, mask, positions = row["input_ids"], row["error_mask"], row["position_ids"]
        starts = [i for i, p in enumerate(positions) if p == 0 and row["attention_mask"][i]] + [
            sum(row["attention_mask"])
        ]
        for a, b in zip(starts, starts[1:]):
            key = tuple(ids[a:b])
            if key not in spans_by_text:
                assert key in chunks_of_long_documents or not any(mask[a:b])  # corpus text has no error tokens
                continue
            # Tokens marked in the mask, grouped into runs, decode to exactly the recorded mistakes.
            runs, current = [], []
            for token, flag in zip(ids[a:b], mask[a:b]):
                if flag:
                    current.append(token)
                elif current:
                    runs.append(tokenizer.decode(current))
                    current = []
            assert runs == spans_by_text[key]
            assert set(row["task_ids"][a:b]) <= {TASK_VOCAB.index("chains"), TASK_VOCAB.index("arithmetic")}
            checked.add(key)
    assert checked == set(spans_by_text)  # every task document that fits a sequence was found and matched


def test_sequences_have_one_difficulty_each(built):
    packed = load_packed(built["output"] / "packed")
    for row in packed:
        real = [d for d, m in zip(row["difficulties"], row["attention_mask"]) if m]
        assert set(real) == {row["difficulty"]}


def test_rerunning_a_finished_build_is_a_no_op(built, capsys):
    manifest = built["output"] / "manifest.json"
    before = (manifest.stat().st_mtime_ns, manifest.read_text())
    # What a kill during an earlier build's clean-up left: its work directory, an old build being deleted.
    recipe = recipe_dict(built["root"], built["output"])
    leftovers = [work_dir(load_recipe(recipe)), built["output"].parent / f".{built['output'].name}.old-0badc0de"]
    for leftover in leftovers:
        (leftover / "shard").mkdir(parents=True)
    build(recipe)
    out = capsys.readouterr().out
    assert "nothing to do" in out and out.count("left by an interrupted clean-up") == 2
    assert not any(leftover.exists() for leftover in leftovers)
    assert (manifest.stat().st_mtime_ns, manifest.read_text()) == before
    files = json.loads(manifest.read_text())["files"]
    assert "packed/shard-00000/state.json" in files and "tokenizer/tokenizer.json" in files


def test_a_different_recipe_does_not_silently_replace_a_build(built):
    with pytest.raises(RecipeError, match="data.output_dir: .* built from a different recipe; pass --overwrite"):
        build(recipe_dict(built["root"], built["output"], pack={"seq_len": 128}))


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.update(colour="red"), "unknown key"),
        (lambda r: r["sources"][0].update(path="/does/not/exist"), r"sources\[0\] \(prose\).path"),
        (lambda r: r["sources"][2]["mixture"][0].update(retry_p=1.5), r"sources\[2\] \(reasoning\).mixture"),
        (lambda r: r.update(filters={"prose": {"gopher_quality": {"min_words": 3}}}), "filters.prose.gopher_quality"),
        (lambda r: r.update(tokenizer={"vocab_size": 100}), "tokenizer.vocab_size"),
        (lambda r: r.update(dedup={"threshold": 1.5}), "dedup.threshold"),
        (lambda r: r.update(clean={"min_chars": 10, "max_chars": 5}), "clean"),
    ],
)
def test_recipe_mistakes_fail_before_any_work(tmp_path, mutate, field):
    root = tmp_path / "c"
    make_corpus(root, EVAL_ITEM)
    recipe = recipe_dict(root, tmp_path / "out")
    mutate(recipe)
    with pytest.raises(RecipeError, match=field):
        build(recipe)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.build-*"))


def test_recipe_file_errors_name_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("output_dir: x\nsources: [{name: a, type: nope}]\n")
    with pytest.raises(RecipeError, match=r"r.yaml: sources\[0\] \(a\).type"):
        load_recipe(path)
    result = subprocess.run(
        [sys.executable, "-m", "cogfm_hf.data", "build", str(path)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "recipe error" in result.stderr and "Traceback" not in result.stderr


def test_interrupted_build_leaves_the_output_untouched_and_resumes(tmp_path):
    root = tmp_path / "c"
    make_corpus(root, EVAL_ITEM)
    output = tmp_path / "out"
    build(recipe_dict(root, output, sources=[{"name": "prose", "type": "files", "path": str(root / "prose")}]))
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}

    slow = recipe_dict(root, output)
    slow["sources"][2]["num_examples"] = 30_000  # long enough to be interrupted mid-way
    recipe_path = tmp_path / "slow.yaml"
    recipe_path.write_text(json.dumps(slow))
    process = subprocess.Popen(
        [sys.executable, "-m", "cogfm_hf.data", "build", str(recipe_path), "--overwrite"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".out.build-*/curated")):
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".out.build-*")), "the build never started"
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before

    build(load_recipe(recipe_path), overwrite=True)  # resumes in the same work directory and completes
    report = json.loads((output / "report.json").read_text())
    assert report["sources"]["reasoning"]["documents_out"] == 30_000
    assert not list(tmp_path.glob(".out.build-*")) and not list(tmp_path.glob(".out.old-*"))


def test_datasets_sources_from_local_data(tmp_path):
    import datasets

    texts = [f"Record number {i} talks about the mill of the old town near the river." for i in range(30)]
    datasets.Dataset.from_dict({"text": texts[:20]}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "parquet").mkdir()
    datasets.Dataset.from_dict({"content": texts[20:]}).to_parquet(str(tmp_path / "parquet" / "part-0.parquet"))
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "workers": 1,
        "sources": [
            {"name": "saved", "type": "hf_dataset", "path": str(tmp_path / "saved")},
            {
                "name": "hub_style",
                "type": "hf_dataset",
                "path": str(tmp_path / "parquet"),
                "text_field": "content",
                "streaming": True,
            },
        ],
        "filters": {"prose": {}, "code": None},
        "dedup": {"exact": False, "near": False},
        "tokenizer": {"vocab_size": 300, "train_chars": 10_000},
        "pack": {"seq_len": 64},
    }
    build(recipe)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sources"]["saved"]["documents_out"] == 20
    assert report["sources"]["hub_style"]["documents_out"] == 10


def test_reusing_a_tokenizer_directory(built, tmp_path):
    root = tmp_path / "c"
    make_corpus(root, EVAL_ITEM)
    recipe = recipe_dict(
        root,
        tmp_path / "out",
        tokenizer={"path": str(built["output"] / "tokenizer")},
        sources=[{"name": "code", "type": "files", "path": str(root / "code")}],
    )
    build(recipe)
    reused = json.loads((tmp_path / "out" / "tokenizer" / "tokenizer.json").read_text())
    original = json.loads((built["output"] / "tokenizer" / "tokenizer.json").read_text())
    assert reused["model"]["vocab"] == original["model"]["vocab"]


def test_lsh_bands_follow_the_threshold():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        buckets, rows = lsh_bands(threshold, 112)
        assert abs((1 / buckets) ** (1 / rows) - threshold) < 0.06


def test_our_minhash_simplifies_and_min_hashes_exactly_as_datatrove(tmp_path):
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import DEF_TEXT_NORM_CONFIG, simplify_text

    texts = [path.read_text() for path in sorted(Path(json.__file__).parent.glob("*.py"))]  # real prose and code
    texts += [
        "Café naïve résumé, Ångström\u0301 x \u0301 y  at 12.5 °C",
        " \u0301a\tb\u0327\n",
        "ｆｕｌｌ width, ﬁ ligature — ‘quotes’ ¿qué? ١٢٣ Ελληνικά",
    ]
    for text in texts:
        assert simplify_words(text, DEF_TEXT_NORM_CONFIG) == simplify_text(text, DEF_TEXT_NORM_CONFIG)
    recipe = load_recipe({"output_dir": str(tmp_path / "o"), "sources": [{"name": "s", "type": "python_stdlib"}]})
    for precision in (64, 32):
        config = dataclasses.replace(minhash_config(recipe), hash_config=HashConfig(precision=precision))
        ours = MinhashSignature(str(tmp_path / "sigs"), config=config)
        for text in texts:
            shingles = ours.get_shingles(text)  # 1,000+ shingles per file: several blocks
            if shingles.size:  # the pipeline signs only documents with an n-gram
                assert ours.get_signature(shingles) == MinhashDedupSignature.get_signature(ours, shingles)


def test_fingerprint_follows_the_recipe_and_the_format_version(monkeypatch, tmp_path):
    from cogfm_hf.data import recipe as recipe_module

    base = load_recipe({"output_dir": str(tmp_path / "o"), "sources": [{"name": "s", "type": "python_stdlib"}]})
    same = load_recipe({"output_dir": str(tmp_path / "o"), "sources": [{"name": "s", "type": "python_stdlib"}]})
    assert base.fingerprint() == same.fingerprint()
    same.pack.seq_len = 128
    assert base.fingerprint() != same.fingerprint()
    before = base.fingerprint()
    monkeypatch.setattr(recipe_module, "DATA_FORMAT_VERSION", recipe_module.DATA_FORMAT_VERSION + 1)
    assert base.fingerprint() != before


def test_a_changed_generator_is_a_new_build_under_the_same_task_name(monkeypatch, tmp_path):
    import cogfm_hf.tasks.chains as chains_module
    from cogfm_hf.experiments.runs import data_key

    def data(task):
        return {"sources": [{"name": "t", "type": "tasks", "num_examples": 10, "mixture": [{"task": task}]}]}

    chains = load_recipe({"output_dir": str(tmp_path / "o"), **data("chains_link")})
    addition = load_recipe({"output_dir": str(tmp_path / "o"), **data("addition_lsd")})
    before = {"chains": chains.fingerprint(), "addition": addition.fingerprint(), "key": data_key(data("chains_link"))}
    edited = tmp_path / "chains.py"  # the generator's module with one line changed, as an edit would leave it
    edited.write_text(Path(chains_module.__file__).read_text() + "\nSEPARATOR = '>'\n")
    monkeypatch.setattr(chains_module, "__file__", str(edited))
    assert chains.fingerprint() != before["chains"]
    assert data_key(data("chains_link")) != before["key"]
    assert addition.fingerprint() == before["addition"]  # another task's module is not part of its build


def test_a_build_with_nothing_to_train_on_is_an_error_naming_the_skips(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad.jsonl").write_text('{"text": "unterminated\n{"body": "no text"}\n')
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "workers": 1,
        "sources": [{"name": "broken", "type": "files", "path": str(tmp_path / "src")}],
        "filters": {"prose": {}, "code": None},
        "dedup": {"exact": False, "near": False},
        "tokenizer": {"vocab_size": 300, "train_chars": 10_000},
        "pack": {"seq_len": 64},
    }
    with pytest.raises(
        EmptyBuildError, match=r"data.sources: .*broken: 0 read, skipped corrupt_json x1, missing_field x1, 0 removed"
    ):
        build(recipe)
    assert not (tmp_path / "out").exists()  # nothing published


def test_a_plain_file_as_output_dir_is_refused_not_moved(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    recipe = {"output_dir": str(tmp_path / "notes.txt"), "sources": [{"name": "s", "type": "python_stdlib"}]}
    with pytest.raises(RecipeError, match=r"data.output_dir: .*notes.txt is a file, not a build directory"):
        build(recipe, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
