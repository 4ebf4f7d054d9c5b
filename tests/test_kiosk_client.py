"""The real kiosk-client 0.8.4 (PyPI) saves our result URLs: public ones work, signed ones break it.

kiosk-client saves `output_url` to `output_dir/` + `output_url.split('/')[-1]`
(kiosk-client 0.8.4 kiosk_client/job.py:343-369): a query string ends up in the file name, and a
signed URL's is longer than the 255-byte limit. That is why docs/kiosk.md says to run kiosk
deployments with OUTPUT_URL_MODE=public.
"""

from __future__ import annotations

import json
import uuid

import pytest

from redis_consumer import storage
from redis_consumer.settings import Settings
from redis_consumer.storage.keys import output_key
from tests.helpers import kiosk_venv as kiosk_client

pytestmark = pytest.mark.timeout(900)
JOB_KEY = f"segmentation:cells.tif:{uuid.uuid4()}"


@pytest.fixture(scope="module")
def kiosk_python():
    return kiosk_client.python()  # builds .venv-kiosk once when missing


@pytest.fixture(params=["s3", "gcs"])
def backend(request, tmp_path):
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    url = "s3://test-bucket" if request.param == "s3" else "gs://test-bucket"
    return request.param, server, url


def client_for(server, url, **extra):
    return storage.get_client(url, Settings.from_env({}, **server.env(), STORAGE_BUCKET=url, **extra))


def test_kiosk_client_saves_a_public_result(kiosk_python, backend, tmp_path):
    _kind, server, url = backend
    data = b"PK\x03\x04 our result bytes " + uuid.uuid4().bytes
    src = tmp_path / "src.zip"
    src.write_bytes(data)
    key, output_url = client_for(server, url, OUTPUT_URL_MODE="public").upload(str(src), output_key(JOB_KEY))
    out = tmp_path / "downloads"
    out.mkdir()
    proc = kiosk_client.download(output_url, str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = out / key.split("/")[-1]
    assert [p.name for p in out.iterdir()] == [saved.name] and saved.name.endswith(".zip")
    assert saved.read_bytes() == data


def fake_service_account(tmp_path) -> str:
    """A service-account key made up locally, so the emulator-backed client signs URLs like production."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": pem,
        "client_email": "worker@test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))
    return str(path)


def test_kiosk_client_cannot_save_a_signed_result(kiosk_python, backend, tmp_path):
    kind, server, url = backend
    extra = {"GOOGLE_APPLICATION_CREDENTIALS": fake_service_account(tmp_path)} if kind == "gcs" else {}
    src = tmp_path / "src.zip"
    src.write_bytes(b"result")
    _key, signed_url = client_for(server, url, OUTPUT_URL_MODE="signed", **extra).upload(str(src), output_key(JOB_KEY))
    name = signed_url.split("/")[-1]
    assert "?" in name and len(name.encode()) > 255  # what kiosk-client will try to create
    out = tmp_path / "downloads"
    out.mkdir()
    proc = kiosk_client.download(signed_url, str(out))
    assert proc.returncode != 0 and "File name too long" in proc.stderr
    assert list(out.iterdir()) == []
