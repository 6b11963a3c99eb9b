// The AWS SDK for JavaScript v3 against postgate, run by Node's built-in test runner
// (`node --test`). tests/interop/test_node.py starts the server, makes a fresh bucket and runs
// this file with:
//   POSTGATE_ENDPOINT, POSTGATE_ACCESS_KEY, POSTGATE_SECRET_KEY, POSTGATE_REGION, POSTGATE_BUCKET
//
// Each test asserts what S3 does, with the SDK's defaults (request checksums included): a
// difference is a postgate bug, not a reason to relax the test.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';

import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createPresignedPost } from '@aws-sdk/s3-presigned-post';

function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set (tests/interop/test_node.py sets it)`);
  }
  return value;
}

const ENDPOINT = env('POSTGATE_ENDPOINT');
const BUCKET = env('POSTGATE_BUCKET');
const TIMEOUT_MS = 60_000;

const client = new S3Client({
  endpoint: ENDPOINT,
  region: env('POSTGATE_REGION'),
  credentials: {
    accessKeyId: env('POSTGATE_ACCESS_KEY'),
    secretAccessKey: env('POSTGATE_SECRET_KEY'),
  },
  forcePathStyle: true,
  // No retries: a server error must show, not be papered over.
  maxAttempts: 1,
});

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

async function getBytes(key) {
  const res = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return { res, bytes: Buffer.from(await res.Body.transformToByteArray()) };
}

test('client-s3: PutObject, GetObject, HeadObject, ListObjectsV2, DeleteObject', { timeout: TIMEOUT_MS }, async () => {
  const key = 'sdk/put/hello world ünïcode.bin';
  const body = randomBytes(64 * 1024 + 17);
  const contentType = 'application/x-postgate-test';

  // The SDK's default request checksum (CRC32 with requestChecksumCalculation WHEN_SUPPORTED).
  const put = await client.send(
    new PutObjectCommand({
      Bucket: BUCKET,
      Key: key,
      Body: body,
      ContentType: contentType,
      Metadata: { purpose: 'interop', client: 'aws-sdk-js-v3' },
    }),
  );
  assert.equal(put.$metadata.httpStatusCode, 200);
  assert.match(put.ETag ?? '', /^"[0-9a-f]{32}"$/, `PutObject ETag: ${put.ETag}`);
  assert.equal(put.ETag, `"${createHash('md5').update(body).digest('hex')}"`);

  const { res: got, bytes } = await getBytes(key);
  assert.equal(bytes.length, body.length);
  assert.ok(bytes.equals(body), 'GetObject returned different bytes');
  assert.equal(got.ContentType, contentType);
  assert.equal(got.ETag, put.ETag);

  const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.equal(head.ContentLength, body.length);
  assert.equal(head.ContentType, contentType);
  assert.equal(head.ETag, put.ETag);
  assert.deepEqual(head.Metadata, { purpose: 'interop', client: 'aws-sdk-js-v3' });

  const list = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'sdk/put/' }));
  assert.equal(list.KeyCount, 1);
  assert.deepEqual(
    (list.Contents ?? []).map((o) => [o.Key, o.Size, o.ETag]),
    [[key, body.length, put.ETag]],
  );

  const del = await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.equal(del.$metadata.httpStatusCode, 204);
  await assert.rejects(
    client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key })),
    (err) => err.$metadata?.httpStatusCode === 404,
  );
  const after = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'sdk/put/' }));
  assert.equal(after.KeyCount, 0);
});

test('client-s3: PutObject of a stream (aws-chunked body with a checksum trailer)', { timeout: TIMEOUT_MS }, async () => {
  const key = 'sdk/stream/data.bin';
  const body = randomBytes(200 * 1024 + 3);
  // A stream of known length: the SDK cannot checksum it up front, so it sends the CRC32 as a
  // trailer of an aws-chunked body.
  const put = await client.send(
    new PutObjectCommand({
      Bucket: BUCKET,
      Key: key,
      Body: Readable.from([body.subarray(0, 70_000), body.subarray(70_000)]),
      ContentLength: body.length,
      ContentType: 'application/octet-stream',
    }),
  );
  assert.equal(put.ETag, `"${createHash('md5').update(body).digest('hex')}"`);
  const { res, bytes } = await getBytes(key);
  assert.equal(res.ContentLength, body.length);
  assert.equal(sha256(bytes), sha256(body));
  // The object must not keep the aws-chunked content encoding.
  assert.notEqual(res.ContentEncoding, 'aws-chunked');
});

test('lib-storage: Upload of 20 MiB in 5 MiB parts (multipart)', { timeout: TIMEOUT_MS }, async () => {
  const key = 'sdk/multipart/twenty-mib.bin';
  const body = randomBytes(20 * 1024 * 1024);
  const upload = new Upload({
    client,
    params: { Bucket: BUCKET, Key: key, Body: body, ContentType: 'application/octet-stream' },
    partSize: 5 * 1024 * 1024,
    queueSize: 4,
    leavePartsOnError: false,
  });
  const done = await upload.done();
  assert.match(done.ETag ?? '', /^"[0-9a-f]{32}-4"$/, `CompleteMultipartUpload ETag: ${done.ETag}`);

  const { res, bytes } = await getBytes(key);
  assert.equal(res.ContentLength, body.length);
  assert.equal(sha256(bytes), sha256(body), 'GetObject returned different bytes');
  assert.equal(res.ETag, done.ETag);

  const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.ok(head.ETag.endsWith('-4"'), `HeadObject ETag: ${head.ETag}`);
});

test('s3-presigned-post: browser form upload, then an oversize file refused', { timeout: TIMEOUT_MS }, async () => {
  const { url, fields } = await createPresignedPost(client, {
    Bucket: BUCKET,
    Key: 'uploads/${filename}',
    Conditions: [
      ['content-length-range', 0, 1000],
      ['starts-with', '$Content-Type', 'text/'],
    ],
    Fields: { 'Content-Type': 'text/plain' },
    Expires: 600,
  });
  // What makes this form different from boto3's: capitalised X-Amz-* names and a bucket field.
  for (const name of ['bucket', 'key', 'Policy', 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Signature']) {
    assert.ok(name in fields, `createPresignedPost gave no ${name} field: ${JSON.stringify(Object.keys(fields))}`);
  }

  const post = async (data) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) {
      form.append(name, value);
    }
    form.append('file', new Blob([data], { type: 'text/plain' }), 'hello.txt');
    let res;
    try {
      res = await fetch(url, { method: 'POST', body: form });
    } catch (err) {
      // A server that answers before reading the whole form and then closes the connection
      // with the rest of the body unread makes the client's write fail (EPIPE/ECONNRESET):
      // the client never sees the answer. S3 answers a form it can read in full.
      throw new Error(
        `POST ${url} of a ${data.length}-byte file: no HTTP response (${err.cause?.code ?? err.message})`,
        { cause: err },
      );
    }
    return { status: res.status, text: await res.text() };
  };

  const hello = Buffer.from('hello from the AWS SDK for JavaScript\n');
  const ok = await post(hello);
  assert.equal(ok.status, 204, `POST ${url}: ${ok.status} ${ok.text}`);

  const { res, bytes } = await getBytes('uploads/hello.txt');
  assert.ok(bytes.equals(hello), `uploads/hello.txt holds ${JSON.stringify(bytes.toString())}`);
  assert.equal(res.ContentType, 'text/plain');

  const big = await post(Buffer.alloc(2000, 'x'));
  assert.equal(big.status, 400, `POST of 2000 bytes: ${big.status} ${big.text}`);
  assert.match(big.text, /<Code>EntityTooLarge<\/Code>/);

  // The refused upload left the stored object alone.
  const again = await getBytes('uploads/hello.txt');
  assert.ok(again.bytes.equals(hello));
});
