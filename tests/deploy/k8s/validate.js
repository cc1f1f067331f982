// Validates Kubernetes objects offline against the OpenAPI schemas of the
// npm package kubernetes-models (Kubernetes 1.27), as a server would
// before it stores them.
//
// Usage: node validate.js FILE.yaml...   (multi-document YAML, as
// `kubectl kustomize` prints it). Needs kubernetes-models and yaml on
// NODE_PATH (test_kubernetes.py installs them with npm ci).
//
// 1. Every document must be an object with apiVersion, kind and
//    metadata.name; a kind the package has no model for is an error, not
//    a skip.
// 2. Each object is checked by its model's validate(): wrong types,
//    missing required fields, bad enum values and formats. Unknown fields
//    are NOT caught (the schemas allow them).
// 3. One line per object, "ok KIND/NAME" or "FAIL KIND/NAME: reason";
//    exit 0 only when there was at least one object and all were ok.
'use strict';
const fs = require('fs');
const YAML = require('yaml');

function modelFor(apiVersion, kind) {
	const parts = String(apiVersion).split('/');
	const path = parts.length === 1 ?
		`kubernetes-models/${parts[0]}/${kind}` :
		`kubernetes-models/${parts[0]}/${parts[1]}/${kind}`;
	try {
		return require(path)[kind];
	} catch (e) {
		return undefined;
	}
}

function check(obj) {
	if (!obj || typeof obj !== 'object' || Array.isArray(obj))
		return ['?', 'not an object'];
	const id = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
	if (!obj.apiVersion || !obj.kind)
		return [id, 'no apiVersion or kind'];
	if (!obj.metadata || !obj.metadata.name)
		return [id, 'no metadata.name'];
	const Model = modelFor(obj.apiVersion, obj.kind);
	if (!Model)
		return [id, `no model for ${obj.apiVersion} ${obj.kind}`];
	try {
		new Model(obj).validate();
	} catch (e) {
		return [id, String(e.message || e).replace(/\s+/g, ' ')];
	}
	return [id, null];
}

function main(files) {
	let n = 0, bad = 0;
	for (const f of files) {
		const docs = YAML.parseAllDocuments(fs.readFileSync(f, 'utf8'));
		for (const d of docs) {
			if (d.errors.length) {
				console.log(`FAIL ${f}: ${d.errors[0].message}`);
				bad++;
				continue;
			}
			const obj = d.toJS();
			if (obj === null)
				continue;
			const [id, err] = check(obj);
			n++;
			if (err) {
				bad++;
				console.log(`FAIL ${id}: ${err}`);
			} else {
				console.log(`ok ${id}`);
			}
		}
	}
	if (n === 0)
		console.log('FAIL: no objects');
	return n > 0 && bad === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
