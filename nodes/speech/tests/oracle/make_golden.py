"""How the golden numbers in tests/whisper.rs were made (run by hand once; no test runs this).

Needs numpy and the PyPI `ctranslate2` wheel (4.8.5 was used), e.g.
    pip install --target /tmp/ct2py ctranslate2 numpy
    PYTHONPATH=/tmp/ct2py python3 make_golden.py
and the files from scripts/setup-speech.sh in ~/.cache/vela/whisper.

The log-mel recipe is written out here in float64 numpy (Whisper's: 30 s of zero padding,
centred STFT with reflect padding, n_fft 400, hop 160, periodic Hann, power, mel_80,
log10 clamp at max-8, (x+4)/4); CTranslate2 provides the encoder reference.
"""
import os
import numpy as np

CACHE = os.path.expanduser(os.environ.get("VELA_CACHE", "~/.cache/vela"))
filt = np.fromfile(f"{CACHE}/whisper/mel_80.f32", dtype="<f4").reshape(80, 201).astype(np.float64)


def logmel(x):
    x = np.concatenate([x.astype(np.float64), np.zeros(480000)])
    x = np.pad(x, 200, mode="reflect")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([x[i * 160:i * 160 + 400] * win for i in range(3000)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    m = np.log10(np.maximum(filt @ power.T, 1e-10))
    m = np.maximum(m, m.max() - 8)
    return (m + 4) / 4


def synth():
    t = np.arange(16000) / 16000.0
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * (200 + 1800 * t) * t)
            + 0.05 * np.sin(2 * np.pi * 3000 * t) * (t > 0.5)).astype(np.float32)


if __name__ == "__main__":
    m = logmel(synth())
    for b, t in [(0, 0), (10, 5), (20, 50), (40, 99), (79, 30), (5, 100), (30, 101), (60, 150), (12, 2999)]:
        print(f"mel ({b}, {t}, {m[b, t]:.6})")
    print("mel mean", m.mean())

    import ctranslate2
    model = ctranslate2.models.Whisper(f"{CACHE}/whisper/tiny.en")
    feats = ctranslate2.StorageView.from_array(m.astype(np.float32)[None])
    enc = np.array(model.encode(feats))
    for t, c in [(0, 0), (0, 1), (10, 100), (49, 383), (200, 7), (1499, 42)]:
        print(f"enc ({t}, {c}, {enc[0, t, c]:.5})")
    print("enc mean", enc.mean())
