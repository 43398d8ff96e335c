"""The committed Python stubs are what grpcio-tools makes of services/api/proto/raynas.proto."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = ("raynas_pb2.py", "raynas_pb2.pyi", "raynas_pb2_grpc.py")


def test_committed_stubs_match_the_proto(tmp_path):
    (tmp_path / "services" / "api" / "proto").mkdir(parents=True)
    shutil.copy(ROOT / "services" / "api" / "proto" / "raynas.proto", tmp_path / "services" / "api" / "proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpc_python_out=.",
                    "--pyi_out=.", "services/api/proto/raynas.proto"], cwd=tmp_path, check=True)
    for name in STUBS:
        fresh = (tmp_path / "services" / "api" / "proto" / name).read_text()
        assert fresh == (ROOT / "services" / "api" / "proto" / name).read_text(), (
            f"services/api/proto/{name} is stale: regenerate it (see the command at the top of raynas.proto)")
