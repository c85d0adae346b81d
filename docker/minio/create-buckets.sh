#!/bin/sh
# One-shot run by the compose service `minio-init` (image minio/mc) once MinIO is healthy. Idempotent:
#   - buckets `mlflow` (MLflow artifacts, served through the MLflow server) and `vetted` (prod-profile files);
#   - the applications' own MinIO user (VETTED_S3_ACCESS_KEY / VETTED_S3_SECRET_KEY) with a policy limited
#     to those two buckets, so the root credentials stay with MinIO and this job.
set -eu

: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in docker/.env}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in docker/.env}"
: "${VETTED_S3_ACCESS_KEY:?set VETTED_S3_ACCESS_KEY in docker/.env}"
: "${VETTED_S3_SECRET_KEY:?set VETTED_S3_SECRET_KEY in docker/.env}"

mc alias set vetted http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

for bucket in mlflow vetted; do
    mc mb --ignore-existing "vetted/$bucket"
done

policy=/tmp/vetted-app-policy.json
printf '%s\n' '{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
     "Resource": ["arn:aws:s3:::mlflow", "arn:aws:s3:::vetted"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": ["arn:aws:s3:::mlflow/*", "arn:aws:s3:::vetted/*"]}
  ]
}' >"$policy"
mc admin policy create vetted vetted-app "$policy"
mc admin user add vetted "$VETTED_S3_ACCESS_KEY" "$VETTED_S3_SECRET_KEY"
# attaching an already-attached policy is reported as an error by mc: accept that case only
if ! out=$(mc admin policy attach vetted vetted-app --user "$VETTED_S3_ACCESS_KEY" 2>&1); then
    case "$out" in
        *"already"*) echo "create-buckets: policy vetted-app already attached" ;;
        *) echo "$out" >&2; exit 1 ;;
    esac
fi
echo "create-buckets: buckets mlflow and vetted ready; user $VETTED_S3_ACCESS_KEY has policy vetted-app"
