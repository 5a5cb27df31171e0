"""D-Persona (Wu et al., CVPR 2024) in PyTorch, written from the behaviour in
docs/dpersona-model.md.

One backbone pass gives features F; stage I draws latent codes z from the prior (or, while training,
the posterior) and decodes each with Fcomb; stage II projects F to one query per rater, attends over a
bank of prior samples and decodes the attended code with the same Fcomb.

`DPersona.serve(image, eps_samples, eps_bank)` is the pure, exportable function behind both the
evaluation code and the ONNX graph, so PyTorch evaluation and the served model are the same function.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


# ---------------------------------------------------------------- backbone (ResNet encoder U-Net)
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNetEncoder(nn.Module):
    """conv7x7/2 + BN + ReLU, maxpool, then four stages of basic blocks (ResNet-34 layout by default).

    Returns the feature maps at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input size.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(cfg.in_channels, cfg.stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem_width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers = []
        cin = cfg.stem_width
        for i, (blocks, width) in enumerate(zip(cfg.stage_blocks, cfg.stage_widths)):
            stride = 1 if i == 0 else 2
            mods = [BasicBlock(cin, width, stride)]
            mods += [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*mods))
            cin = width
        self.layers = nn.ModuleList(layers)
        self.out_widths = [cfg.stem_width] + list(cfg.stage_widths)

    def forward(self, x) -> List[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        feats = [x]
        x = self.maxpool(x)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNetBackbone(nn.Module):
    """ResNet encoder + 5-block decoder (nearest x2, concat skip, 2x conv-BN-ReLU) -> F [N,16,H,W]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder = ResNetEncoder(cfg)
        enc = self.encoder.out_widths  # [stem, s1, s2, s3, s4]
        skips = [enc[3], enc[2], enc[1], enc[0], 0]
        blocks = []
        cin = enc[4]
        for skip, width in zip(skips, cfg.decoder_widths):
            blocks.append(nn.Sequential(conv_bn_relu(cin + skip, width), conv_bn_relu(width, width)))
            cin = width
        self.decoder = nn.ModuleList(blocks)

    def forward(self, x):
        feats = self.encoder(x)
        skips = [feats[3], feats[2], feats[1], feats[0], None]
        y = feats[4]
        for block, skip in zip(self.decoder, skips):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            if skip is not None:
                y = torch.cat([y, skip], dim=1)
            y = block(y)
        return y


# ---------------------------------------------------------------- prior / posterior nets
class GaussianLatentNet(nn.Module):
    """Conv encoder -> spatial mean -> 1x1 conv -> (mu, log_sigma) of a diagonal Gaussian."""

    def __init__(self, in_channels: int, widths, convs_per_level: int, latent_size: int):
        super().__init__()
        mods: List[nn.Module] = []
        cin = in_channels
        for level, width in enumerate(widths):
            if level > 0:
                mods.append(nn.AvgPool2d(2, 2, 0, ceil_mode=True))
            for _ in range(convs_per_level):
                mods += [nn.Conv2d(cin, width, 3, 1, 1), nn.ReLU(inplace=True)]
                cin = width
        self.encoder = nn.Sequential(*mods)
        self.to_params = nn.Conv2d(cin, 2 * latent_size, 1)
        self.latent_size = latent_size
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.normal_(m.bias, std=0.001)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).mean(dim=(2, 3), keepdim=True)
        params = self.to_params(h).flatten(1)
        return params[:, : self.latent_size], params[:, self.latent_size:]


# ---------------------------------------------------------------- Fcomb
class Fcomb(nn.Module):
    """1x1 convs on [F, tile(z)], computed exactly as W_f*F (once per image) + W_z*z (per code).

    The first layer is stored as one conv over F+L channels (features first, then z) so the weights
    are those of the concatenated form; forward uses the split, which is the same arithmetic.
    """

    def __init__(self, feature_channels: int, latent_size: int, width: int, convs: int):
        super().__init__()
        self.feature_channels = feature_channels
        self.first = nn.Conv2d(feature_channels + latent_size, width, 1)
        self.hidden = nn.ModuleList([nn.Conv2d(width, width, 1) for _ in range(convs - 2)])
        self.last = nn.Conv2d(width, 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.normal_(m.bias, std=0.001)

    def regularised_parameters(self):
        """The hidden layers (everything but the output layer), as the reference regularises."""
        yield from self.first.parameters()
        for m in self.hidden:
            yield from m.parameters()

    def feature_term(self, feats: torch.Tensor) -> torch.Tensor:
        w_f = self.first.weight[:, : self.feature_channels]
        if feats.dim() == 4 and feats.is_contiguous(memory_format=torch.channels_last) \
                and not feats.is_contiguous():
            # Channels-last features are a [N*H*W, C] matrix: the 1x1 conv is one matrix product
            # (PyTorch's CPU conv takes a slow path for 1x1 kernels at batch < 16).
            n, c, h, w = feats.shape
            out = F.linear(feats.permute(0, 2, 3, 1).reshape(n * h * w, c), w_f[:, :, 0, 0],
                           self.first.bias)
            return out.reshape(n, h, w, -1).permute(0, 3, 1, 2)
        return F.conv2d(feats, w_f, self.first.bias)

    def z_term(self, z: torch.Tensor) -> torch.Tensor:
        """W_z*z, the first layer's per-code bias: z [N,S,L] -> [N,S,W]."""
        w_z = self.first.weight[:, self.feature_channels:, 0, 0]  # [W, L]
        return torch.matmul(z, w_z.t())

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the first layer's ReLU: [B,W,H,W'] -> logits [B,1,H,W']."""
        for conv in self.hidden:
            x = F.relu(conv(x))
        return self.last(x)

    def forward(self, feature_term: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """feature_term [N,W,H,W'] from `feature_term`, z [N,S,L] -> logits [N,S,H,W']."""
        n, width, h, w = feature_term.shape
        z_term = self.z_term(z)  # [N,S,W]
        x = F.relu(feature_term.unsqueeze(1) + z_term.unsqueeze(-1).unsqueeze(-1))
        x = x.flatten(0, 1)  # [N*S, W, H, W']
        return self.tail(x).reshape(n, z.shape[1], h, w)

    @torch.no_grad()
    def extreme_samples(self, feature_term: torch.Tensor, z: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per pixel, the index of the code with the highest and the lowest probability:
        (argmax, argmin) [N,H,W'] of sigmoid(self(feature_term, z)) over S, as torch.max / torch.min
        over dim 1 pick them. Computed without autograd a few images at a time, so the S decoded
        maps are neither stored for backward nor all in memory at once. Blocks hold at least 16
        maps: below that PyTorch's CPU convolution leaves oneDNN for a slower 1x1 path."""
        n, width, h, w = feature_term.shape
        s = z.shape[1]
        z_term = self.z_term(z)  # [N,S,W]
        per_block = max(1, -(-16 // s))
        hi, lo = [], []
        for i in range(0, n, per_block):
            x = F.relu(feature_term[i:i + per_block, None]
                       + z_term[i:i + per_block, :, :, None, None]).flatten(0, 1)
            if feature_term.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            probs = torch.sigmoid(self.tail(x)).view(-1, s, h, w)
            hi.append(probs.max(dim=1).indices)
            lo.append(probs.min(dim=1).indices)
        return torch.cat(hi), torch.cat(lo)

    def forward_selected(self, feature_term: torch.Tensor, z: torch.Tensor,
                         index: torch.Tensor) -> torch.Tensor:
        """Logits of the code z[n, index[n,y,x]] at each pixel: feature_term [N,W,H,W'], z [N,S,L],
        index [N,H,W'] -> [N,H,W']. Equal to self(feature_term, z) gathered at `index` along S,
        with gradients to the selected codes only (as max/min route them), at the cost of one map
        per image instead of S."""
        n, width, h, w = feature_term.shape
        s = z.shape[1]
        flat = (index.reshape(n, h * w) + s * torch.arange(n, device=index.device)[:, None])
        per_pixel = self.z_term(z).reshape(n * s, width)[flat.reshape(-1)]  # [N*HW,W]
        per_pixel = per_pixel.reshape(n, h, w, width).permute(0, 3, 1, 2)  # channels-last layout
        return self.tail(F.relu(feature_term + per_pixel))[:, 0]


# ---------------------------------------------------------------- stage II projection head
class ProjectionHead(nn.Module):
    """Small CNN on F -> query q [N,1,L] (3x3 convs with padding 3, so each conv grows the map)."""

    def __init__(self, feature_channels: int, widths, latent_size: int, dropout: float):
        super().__init__()
        mods: List[nn.Module] = []
        cin = feature_channels
        all_widths = list(widths) + [latent_size]
        for level, width in enumerate(all_widths):
            if level > 0:
                mods.append(nn.AvgPool2d(2, 2))
            mods += [nn.Conv2d(cin, width, 3, 1, 3), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
                     nn.Conv2d(width, width, 3, 1, 3), nn.ReLU(inplace=True)]
            cin = width
        self.net = nn.Sequential(*mods)

    def forward(self, feats):
        return self.net(feats).mean(dim=(2, 3)).unsqueeze(1)


def attend(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """a = softmax(q Z^T) (no scaling), z = a Z. query [N,1,L], bank [N,K,L] -> [N,L]."""
    weights = torch.softmax(torch.matmul(query, bank.transpose(1, 2)), dim=-1)
    return torch.matmul(weights, bank).squeeze(1)


# ---------------------------------------------------------------- the model
class DPersona(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        L = cfg.latent_size
        self.backbone = UNetBackbone(cfg)
        fc = cfg.feature_channels
        self.prior = GaussianLatentNet(cfg.in_channels, cfg.latent_net_widths, cfg.latent_net_convs, L)
        self.posterior = GaussianLatentNet(cfg.in_channels + cfg.num_raters, cfg.latent_net_widths,
                                           cfg.latent_net_convs, L)
        self.fcomb = Fcomb(fc, L, cfg.fcomb_width, cfg.fcomb_convs)
        self.heads = nn.ModuleList([ProjectionHead(fc, cfg.head_widths, L, cfg.head_dropout)
                                    for _ in range(cfg.num_raters)])

    # -- pieces used by training
    def stage1_modules(self) -> List[nn.Module]:
        return [self.backbone, self.prior, self.posterior, self.fcomb]

    def head_queries(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(feats) for head in self.heads], dim=1)  # [N,R,L]

    def rater_codes(self, feats: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        """One attended code per rater: [N,R,L]."""
        return torch.stack([attend(head(feats), bank) for head in self.heads], dim=1)

    def sample_probs(self, image: torch.Tensor, eps_samples: torch.Tensor) -> torch.Tensor:
        """Stage I alone (validation during stage I): [N,S,H,W] probabilities."""
        feats = self.backbone(image)
        mu, log_sigma = self.prior(image)
        z = mu.unsqueeze(1) + torch.exp(log_sigma).unsqueeze(1) * eps_samples
        return torch.sigmoid(self.fcomb(self.fcomb.feature_term(feats), z))

    # -- the exported function
    def serve(self, image: torch.Tensor, eps_samples: torch.Tensor, eps_bank: torch.Tensor):
        """image [N,C,H,W], eps_samples [N,S,L], eps_bank [N,K,L] ->
        (sample_probs [N,S,H,W], rater_probs [N,R,H,W]); one backbone pass serves both stages."""
        feats = self.backbone(image)
        mu, log_sigma = self.prior(image)
        sigma = torch.exp(log_sigma).unsqueeze(1)
        mu = mu.unsqueeze(1)
        z_samples = mu + sigma * eps_samples
        bank = mu + sigma * eps_bank
        feature_term = self.fcomb.feature_term(feats)
        sample_probs = torch.sigmoid(self.fcomb(feature_term, z_samples))
        rater_probs = torch.sigmoid(self.fcomb(feature_term, self.rater_codes(feats, bank)))
        return sample_probs, rater_probs


class ServingGraph(nn.Module):
    """The pure function exported to ONNX (eval mode, noise as inputs)."""

    def __init__(self, model: DPersona):
        super().__init__()
        self.model = model

    def forward(self, image, eps_samples, eps_bank):
        return self.model.serve(image, eps_samples, eps_bank)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_encoder_weights(model: DPersona, path: str) -> None:
    """Load an encoder state_dict (torchvision ResNet-34 names accepted; fc ignored; a 3-channel
    first conv is summed over RGB for 1-channel input, as the reference does)."""
    import os
    if not os.path.isfile(path):
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    enc = model.backbone.encoder
    mapped: Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        k = k.replace("encoder.", "", 1) if k.startswith("encoder.") else k
        if k.startswith("fc."):
            continue
        for i in range(4):
            if k.startswith(f"layer{i + 1}."):
                k = f"layers.{i}." + k[len(f"layer{i + 1}."):]
        if k == "conv1.weight" and v.shape[1] != enc.conv1.weight.shape[1]:
            if enc.conv1.weight.shape[1] == 1:
                v = v.sum(dim=1, keepdim=True)
            else:
                raise ValueError(f"{path}: conv1 has {v.shape[1]} input channels, model has "
                                 f"{enc.conv1.weight.shape[1]}")
        mapped[k] = v
    missing, unexpected = enc.load_state_dict(mapped, strict=False)
    if missing:
        raise ValueError(f"{path}: encoder weights lack {len(missing)} tensors, e.g. {missing[:3]}")
