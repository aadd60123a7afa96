#!/usr/bin/env bash
# The documentation's analysis examples (docs/results.md, docs/extractors.md), from the repository root (about 25 min on 2 CPU cores; a rerun resumes):
# - zoo_report.html / zoo_sheet.png / zoo_report.png: the zoo ResNet vs the zoo ViT on the 32 shipped targets, 4
#   generations each, on the same latent prior (configs/fmnist/latent_resnet.yaml; the ViT run swaps the extractor),
#   beside the unguided baseline (w = 0, K = 1); diversity in both networks' feature spaces;
# - interpolate_sheet.png: configs/fmnist/interpolate.yaml; channel_sheet.png: configs/fmnist/channel.yaml beside its
#   unguided baseline.
set -euo pipefail
out=assets/examples
run() { lit-featinv predict --model.init_args.progress false --trainer.enable_progress_bar false "$@"; }
latent="--config configs/fmnist/latent_resnet.yaml --trainer.default_root_dir"
run $latent runs/example/resnet
run $latent runs/example/vit --model.init_args.extractor.init_args.model_name local-dir:assets/zoo/fmnist-vit-tiny
run $latent runs/example/unguided --model.init_args.guidance.init_args.scale 0 --model.init_args.recurrence 1
run --config configs/fmnist/interpolate.yaml --trainer.default_root_dir runs/example/interpolate
run --config configs/fmnist/channel.yaml --trainer.default_root_dir runs/example/channel
run --config configs/fmnist/channel.yaml --trainer.default_root_dir runs/example/channel_unguided \
    --model.init_args.guidance.init_args.scale 0

lit-featinv report runs/example/resnet runs/example/vit --label "zoo ResNet" "zoo ViT" \
    --baseline runs/example/unguided --extractor runs/example/resnet/config.yaml runs/example/vit/config.yaml \
    --out $out/zoo_report.html --sheet $out/zoo_sheet.png
lit-featinv report runs/example/interpolate --label slerp --tile 56 \
    --out runs/example/interpolate_report.html --sheet $out/interpolate_sheet.png
lit-featinv report runs/example/channel --label guided --baseline runs/example/channel_unguided \
    --tile 56 --out runs/example/channel_report.html --sheet $out/channel_sheet.png
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1100 \
    --screenshot=$out/zoo_report.png "file://$PWD/$out/zoo_report.html" 2>/dev/null
