"""transformers is an optional extra: importing ember (and ember.patch) never needs it."""

import subprocess
import sys


def test_import_without_transformers():
    code = (
        "import sys; sys.modules['transformers'] = None\n"  # makes `import transformers` fail
        "import ember, ember.patch\n"
        "for f in (ember.patch.apply_ember_to_llama, ember.patch.apply_ember, ember.patch.supported):\n"
        "    try:\n        f()\n    except ImportError as e:\n        print('ImportError', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ImportError ember.patch needs transformers") == 3
