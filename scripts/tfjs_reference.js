#!/usr/bin/env node
// Runs a TensorFlow.js graph model with TensorFlow.js itself (its pure-JS CPU backend), so that
// epam_data.pose.tfjs_graph can be checked against the real runtime (tests/test_movenet.py).
//
//   NODE_PATH=<venv>/share/epam/tfjs/node_modules node scripts/tfjs_reference.js \
//       MODEL_JSON INPUT OUT_PREFIX [NODE,NODE...]
//
// INPUT is raw little-endian data with INPUT.json = {"dtype": "float32" | "int32", "shape": [...]}.
// Writes OUT_PREFIX.<i>.bin (raw little-endian float32 / int32) and OUT_PREFIX.<i>.json
// ({"name", "dtype", "shape"}) for each requested node (default: the model's outputs).
// make venv installs the three packages it needs (scripts/bootstrap.sh).
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const { loadGraphModel } = require('@tensorflow/tfjs-converter');

function loadModel(modelJson) {
  const model = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const folder = path.dirname(modelJson);
  const weightSpecs = [];
  const shards = [];
  for (const group of model.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const name of group.paths) shards.push(fs.readFileSync(path.join(folder, name)));
  }
  const all = Buffer.concat(shards);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return loadGraphModel(
    tf.io.fromMemory({ ...model, modelTopology: model.modelTopology, weightSpecs, weightData })
  );
}

function readInput(file) {
  const header = JSON.parse(fs.readFileSync(file + '.json', 'utf8'));
  const bytes = fs.readFileSync(file);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const Kind = { float32: Float32Array, int32: Int32Array }[header.dtype];
  if (!Kind) throw new Error('input dtype must be float32 or int32, not ' + header.dtype);
  return tf.tensor(new Kind(buffer), header.shape, header.dtype);
}

async function main() {
  const [modelJson, input, outPrefix, nodeList] = process.argv.slice(2);
  if (!outPrefix) throw new Error('usage: tfjs_reference.js MODEL_JSON INPUT OUT_PREFIX [NODES]');
  await tf.setBackend('cpu');
  const model = await loadModel(modelJson);
  const nodes = nodeList ? nodeList.split(',') : model.outputNodes;
  let results = await model.executeAsync(readInput(input), nodes);
  if (!Array.isArray(results)) results = [results];
  for (let i = 0; i < results.length; i++) {
    const tensor = results[i].dtype === 'bool' ? results[i].cast('int32') : results[i];
    const data = await tensor.data();
    fs.writeFileSync(`${outPrefix}.${i}.bin`, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    const meta = { name: nodes[i], dtype: tensor.dtype, shape: tensor.shape };
    fs.writeFileSync(`${outPrefix}.${i}.json`, JSON.stringify(meta));
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
