#!/usr/bin/env python3
"""Stand-ins for README's walkthrough of config/remote-targets.toml (needs `pip install 'moto[server]'`,
which brings boto3, and `moto_server -p 9000` running):

  remote-demo.py serve   a vector store's deletion API on 127.0.0.1:8081 holding /v1/documents/lib1,
                         lib2 and /v1/accounts/u1: DELETE answers 204 (404 when gone), GET 200/404;
                         every request is printed.
  remote-demo.py seed    bucket `uploads` (versioned) on moto with two versions of libraries/u1/lib1,
                         libraries/u1/lib2 and libraries/u2/lib3.
  remote-demo.py show    every version and delete marker left in the bucket.
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

S3 = "http://127.0.0.1:9000"
DOCS = {"/v1/documents/lib1", "/v1/documents/lib2", "/v1/documents/lib3", "/v1/accounts/u1"}


class Service(BaseHTTPRequestHandler):
    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_DELETE(self):
        path = self.path.split("?")[0]
        self.answer(204 if path in DOCS else 404)
        DOCS.discard(path)

    def do_GET(self):
        self.answer(200 if self.path.split("?")[0] in DOCS else 404)


def s3():
    import boto3

    return boto3.client("s3", endpoint_url=S3, aws_access_key_id="test",
                        aws_secret_access_key="test", region_name="us-east-1")


def main(cmd):
    if cmd == "serve":
        ThreadingHTTPServer(("127.0.0.1", 8081), Service).serve_forever()
    elif cmd == "seed":
        c = s3()
        c.create_bucket(Bucket="uploads")
        c.put_bucket_versioning(Bucket="uploads", VersioningConfiguration={"Status": "Enabled"})
        for key in ["libraries/u1/lib1", "libraries/u1/lib2", "libraries/u2/lib3"]:
            for body in [b"v1", b"v2"]:
                c.put_object(Bucket="uploads", Key=key, Body=body)
    elif cmd == "show":
        r = s3().list_object_versions(Bucket="uploads")
        for v in r.get("Versions", []) + r.get("DeleteMarkers", []):
            print(v["Key"], v["VersionId"])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
