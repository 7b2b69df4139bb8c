# The two commands a newcomer needs: `make serve` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CI has two cores; more threads than cores only makes torch slower.
export OMP_NUM_THREADS ?= 2
PORT ?= 8500
METRICS_PORT ?= 8501

.PHONY: serve test lint format protos models pictures demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstall when the project's dependencies change. `serve` needs no torch.
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[serve]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[train,serve,export,data,dev]'
	touch $@ $(VENV)/.serve-installed

## serve: set up, then serve the shipped models in models/ (gRPC :8500, metrics :8501)
serve: $(VENV)/.serve-installed
	$(BIN)/ganserve serve --model-repository models --host 127.0.0.1 --port $(PORT) \
		--metrics-port $(METRICS_PORT)

## test: set up, lint, then run the whole test suite
test: $(VENV)/.dev-installed lint
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## protos: regenerate the gRPC code in clients/ganserve/{v1,oip} from protos/ (never edit it)
protos: $(VENV)/.dev-installed
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=clients --pyi_out=clients \
		--grpc_python_out=clients protos/ganserve/v1/ganserve.proto \
		protos/ganserve/oip/grpc_service.proto

## models: rebuild the shipped generators end to end (train → evaluate → export → verify), 25 min
## on 2026-12-02's VM with an 80-epoch cgan (120 now: ~35 min estimated), 49 on a slower one
## (models/README.md), plus ~10 min for the cgan's value
## (CAS, augmentation gain), measured once, through ONNX Runtime, into evaluation.json and its card;
## replaces runs/{dcgan,cgan,pix2pix,vae,srgan,inpaint,cyclegan}-mnist and models/mnist-*; judged by the shipped judges/
models: $(VENV)/.dev-installed
	test -f judges/classifier.pt || $(BIN)/python -m ganserve.training classifier
	$(BIN)/python -m ganserve.export.judge  # judges/judge.onnx for the quality probe
	rm -rf runs/dcgan-mnist runs/cgan-mnist runs/pix2pix-mnist runs/vae-mnist runs/srgan-mnist runs/inpaint-mnist runs/cyclegan-mnist
	$(BIN)/python -m ganserve.training dcgan --out runs/dcgan-mnist
	$(BIN)/python -m ganserve.training cgan --out runs/cgan-mnist --no-value
	$(BIN)/python -m ganserve.training pix2pix --out runs/pix2pix-mnist
	$(BIN)/python -m ganserve.training vae --out runs/vae-mnist
	$(BIN)/python -m ganserve.training srgan --out runs/srgan-mnist
	$(BIN)/python -m ganserve.training inpaint --out runs/inpaint-mnist
	$(BIN)/python -m ganserve.training cyclegan --out runs/cyclegan-mnist
	rm -rf models/mnist-dcgan models/mnist-cgan models/mnist-edges2digits models/mnist-vae models/mnist-sr4x models/mnist-inpaint models/mnist-digits2paper
	$(BIN)/python -m ganserve.export runs/dcgan-mnist/checkpoint.pt --name mnist-dcgan --fp16
	$(BIN)/python -m ganserve.export runs/cgan-mnist/checkpoint.pt --name mnist-cgan --fp16
	$(BIN)/python -m ganserve.export runs/pix2pix-mnist/checkpoint.pt --name mnist-edges2digits
	$(BIN)/python -m ganserve.export runs/vae-mnist/checkpoint.pt --name mnist-vae --fp16
	$(BIN)/python -m ganserve.export runs/srgan-mnist/checkpoint.pt --name mnist-sr4x
	$(BIN)/python -m ganserve.export runs/inpaint-mnist/checkpoint.pt --name mnist-inpaint
	$(BIN)/python -m ganserve.export runs/cyclegan-mnist/checkpoint.pt --name mnist-digits2paper
	for m in mnist-dcgan mnist-cgan mnist-edges2digits mnist-vae mnist-sr4x mnist-inpaint mnist-digits2paper; do \
		$(BIN)/python -m ganserve.export.evaluate models/$$m/1/model.onnx --card \
			> models/$$m/1/evaluation.json; done
	$(MAKE) pictures

## pictures: a picture of every shipped model in docs/images/ (from its ONNX file, seconds)
pictures: $(VENV)/.dev-installed
	$(BIN)/python -m ganserve.export.pictures --models models --out docs/images

## demo: a short DCGAN training run on MNIST (10 epochs), with its evaluation
demo: $(VENV)/.dev-installed
	$(BIN)/python -m ganserve.training dcgan --out runs/demo --epochs 10

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
