// The AWS SDK for JavaScript v3 against the S3 conformance rows of docs/s3-compatibility.md:
// flexible checksums (every algorithm the SDK offers, on PutObject and on multipart parts),
// GetObject by part number and a conditional copy. Run by tests/interop/test_node.py with the
// same environment as sdk.test.mjs.
//
// Spec: https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';

function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set (tests/interop/test_node.py sets it)`);
  }
  return value;
}

const BUCKET = env('POSTGATE_BUCKET');
const TIMEOUT_MS = 60_000;
const MIB = 1024 * 1024;

const client = new S3Client({
  endpoint: env('POSTGATE_ENDPOINT'),
  region: env('POSTGATE_REGION'),
  credentials: {
    accessKeyId: env('POSTGATE_ACCESS_KEY'),
    secretAccessKey: env('POSTGATE_SECRET_KEY'),
  },
  forcePathStyle: true,
  maxAttempts: 1,
});

const digest = (algo, bytes) => createHash(algo).update(bytes).digest('base64');

for (const algorithm of ['CRC32', 'CRC32C', 'CRC64NVME', 'SHA1', 'SHA256']) {
  test(`client-s3: PutObject with ChecksumAlgorithm ${algorithm}, read back with ChecksumMode`, { timeout: TIMEOUT_MS }, async () => {
    const key = `conf/sum-${algorithm}.bin`;
    const body = randomBytes(100_000 + 7);
    const put = await client.send(
      new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body, ChecksumAlgorithm: algorithm }),
    );
    const value = put[`Checksum${algorithm}`];
    assert.ok(value, `PutObject answered no Checksum${algorithm}`);
    if (algorithm === 'SHA256') assert.equal(value, digest('sha256', body));
    if (algorithm === 'SHA1') assert.equal(value, digest('sha1', body));
    // With ChecksumMode the SDK validates the body against the returned checksum as it reads.
    const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key, ChecksumMode: 'ENABLED' }));
    const bytes = Buffer.from(await got.Body.transformToByteArray());
    assert.ok(bytes.equals(body));
    assert.equal(got[`Checksum${algorithm}`], value);
  });
}

test('client-s3: multipart with ChecksumAlgorithm CRC32C, then GetObject PartNumber', { timeout: TIMEOUT_MS }, async () => {
  const key = 'conf/mp-crc32c.bin';
  const bodies = [randomBytes(5 * MIB), randomBytes(3333)];
  const { UploadId } = await client.send(
    new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key, ChecksumAlgorithm: 'CRC32C' }),
  );
  const parts = [];
  for (const [i, body] of bodies.entries()) {
    const res = await client.send(
      new UploadPartCommand({
        Bucket: BUCKET, Key: key, UploadId, PartNumber: i + 1, Body: body, ChecksumAlgorithm: 'CRC32C',
      }),
    );
    assert.ok(res.ChecksumCRC32C, 'UploadPart answered no ChecksumCRC32C');
    parts.push({ PartNumber: i + 1, ETag: res.ETag, ChecksumCRC32C: res.ChecksumCRC32C });
  }
  const done = await client.send(
    new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId, MultipartUpload: { Parts: parts } }),
  );
  assert.match(done.ChecksumCRC32C, /-2$/);

  const part = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key, PartNumber: 2 }));
  assert.equal(part.PartsCount, 2);
  assert.ok(Buffer.from(await part.Body.transformToByteArray()).equals(bodies[1]));
});

test('client-s3: CopyObject with CopySourceIfNoneMatch refused, CopySourceIfMatch copied', { timeout: TIMEOUT_MS }, async () => {
  const body = Buffer.from('conditional copy source');
  const put = await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'conf/src', Body: body }));
  const CopySource = `${BUCKET}/conf/src`;
  await assert.rejects(
    client.send(new CopyObjectCommand({ Bucket: BUCKET, Key: 'conf/no', CopySource, CopySourceIfNoneMatch: put.ETag })),
    (err) => err.name === 'PreconditionFailed' && err.$metadata.httpStatusCode === 412,
  );
  await client.send(new CopyObjectCommand({ Bucket: BUCKET, Key: 'conf/yes', CopySource, CopySourceIfMatch: put.ETag }));
  const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'conf/yes' }));
  assert.ok(Buffer.from(await got.Body.transformToByteArray()).equals(body));
});

test('client-s3: multipart with CRC64NVME gets the full-object CRC the SDK validates on GetObject', { timeout: TIMEOUT_MS }, async () => {
  const key = 'conf/mp-crc64nvme.bin';
  const bodies = [randomBytes(5 * MIB), randomBytes(4321)];
  const { UploadId } = await client.send(
    new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key, ChecksumAlgorithm: 'CRC64NVME' }),
  );
  const parts = [];
  for (const [i, body] of bodies.entries()) {
    const res = await client.send(
      new UploadPartCommand({
        Bucket: BUCKET, Key: key, UploadId, PartNumber: i + 1, Body: body, ChecksumAlgorithm: 'CRC64NVME',
      }),
    );
    parts.push({ PartNumber: i + 1, ETag: res.ETag, ChecksumCRC64NVME: res.ChecksumCRC64NVME });
  }
  const done = await client.send(
    new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId, MultipartUpload: { Parts: parts } }),
  );
  assert.equal(done.ChecksumType, 'FULL_OBJECT');
  assert.doesNotMatch(done.ChecksumCRC64NVME, /-/);
  // A full-object value: the SDK checks the whole body against it as it reads.
  const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key, ChecksumMode: 'ENABLED' }));
  assert.ok(Buffer.from(await got.Body.transformToByteArray()).equals(Buffer.concat(bodies)));
  assert.equal(got.ChecksumCRC64NVME, done.ChecksumCRC64NVME);
  assert.equal(got.ChecksumType, 'FULL_OBJECT');
});

test('client-s3: CopyObject with ChecksumAlgorithm SHA256 checksums the copy', { timeout: TIMEOUT_MS }, async () => {
  const body = randomBytes(200_000);
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'conf/sum-src', Body: body }));
  const copied = await client.send(
    new CopyObjectCommand({
      Bucket: BUCKET, Key: 'conf/sum-copy', CopySource: `${BUCKET}/conf/sum-src`, ChecksumAlgorithm: 'SHA256',
    }),
  );
  assert.equal(copied.CopyObjectResult.ChecksumSHA256, digest('sha256', body));
  const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'conf/sum-copy', ChecksumMode: 'ENABLED' }));
  assert.ok(Buffer.from(await got.Body.transformToByteArray()).equals(body));
  assert.equal(got.ChecksumSHA256, digest('sha256', body));
});

// Conditional deletes (2024): DeleteObject IfMatch, DeleteObjects per-object ETag,
// AbortMultipartUpload IfMatchInitiatedTime.
// Spec: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html
test('client-s3: DeleteObject IfMatch, DeleteObjects ETag and AbortMultipartUpload IfMatchInitiatedTime', { timeout: TIMEOUT_MS }, async () => {
  const stale = '"00000000000000000000000000000000"';
  const put = await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'conf/cd', Body: 'kept' }));
  await assert.rejects(
    client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'conf/cd', IfMatch: stale })),
    (err) => err.name === 'PreconditionFailed' && err.$metadata.httpStatusCode === 412,
  );
  await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'conf/cd', IfMatch: put.ETag, IfMatchSize: 4 }));
  await assert.rejects(
    client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'conf/cd', IfMatch: '*' })),
    (err) => err.name === 'NoSuchKey' && err.$metadata.httpStatusCode === 404,
  );

  const a = await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'conf/cd-a', Body: 'a' }));
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'conf/cd-b', Body: 'b' }));
  const res = await client.send(new DeleteObjectsCommand({
    Bucket: BUCKET,
    Delete: { Objects: [{ Key: 'conf/cd-a', ETag: a.ETag }, { Key: 'conf/cd-b', ETag: stale }] },
  }));
  assert.deepEqual(res.Deleted.map((d) => d.Key), ['conf/cd-a']);
  assert.deepEqual(res.Errors.map((e) => [e.Key, e.Code]), [['conf/cd-b', 'PreconditionFailed']]);

  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'conf/cd-up' }));
  const list = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: 'conf/cd-up' }));
  const initiated = list.Uploads.find((u) => u.UploadId === UploadId).Initiated;
  await assert.rejects(
    client.send(new AbortMultipartUploadCommand({
      Bucket: BUCKET, Key: 'conf/cd-up', UploadId, IfMatchInitiatedTime: new Date(initiated.getTime() - 86_400_000),
    })),
    (err) => err.name === 'PreconditionFailed' && err.$metadata.httpStatusCode === 412,
  );
  await client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: 'conf/cd-up', UploadId, IfMatchInitiatedTime: initiated }));
  const after = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: 'conf/cd-up' }));
  assert.equal((after.Uploads ?? []).length, 0);
});
