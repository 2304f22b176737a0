// JSON Schema (draft 2020-12) validation for the keywords edgecam's schemas use.
// A schema using any other keyword throws, so a schema that outgrows this file is
// noticed instead of being half-checked (tests/console.rs compares its verdicts with
// a full validator's on both schemas the console publishes against).
"use strict";

(function (global) {
  const ANNOTATIONS = new Set(["$schema", "$id", "title", "description", "examples", "default", "$comment"]);
  const KEYWORDS = new Set([
    "type", "enum", "const", "required", "properties", "additionalProperties", "items",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "minItems", "maxItems", "pattern", "oneOf", "anyOf", "allOf", "not", "if", "then", "else",
    "dependentRequired",
  ]);

  function typeOf(v) {
    if (v === null) return "null";
    if (Array.isArray(v)) return "array";
    if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
    return typeof v;
  }

  function hasType(v, t) {
    const actual = typeOf(v);
    return actual === t || (t === "number" && actual === "integer");
  }

  function equal(a, b) {
    if (a === b) return true;
    if (typeOf(a) !== typeOf(b) || typeof a !== "object" || a === null) return false;
    if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => equal(x, b[i]));
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && equal(a[k], b[k]));
  }

  // Pushes {path, error} for every violation of `schema` by `value` at `path`.
  function check(schema, value, path, errors) {
    if (schema === true) return;
    if (schema === false) { errors.push({ path, error: "not allowed" }); return; }
    for (const k of Object.keys(schema)) {
      if (!KEYWORDS.has(k) && !ANNOTATIONS.has(k)) throw new Error("schema keyword not supported: " + k);
    }
    const s = schema;
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type : [s.type];
      if (!types.some((t) => hasType(value, t))) {
        errors.push({ path, error: "must be " + types.join(" or ") + ", not " + typeOf(value) });
        return;
      }
    }
    if (s.enum !== undefined && !s.enum.some((e) => equal(e, value))) {
      errors.push({ path, error: "must be one of " + s.enum.map((e) => JSON.stringify(e)).join(", ") });
    }
    if (s.const !== undefined && !equal(s.const, value)) {
      errors.push({ path, error: "must be " + JSON.stringify(s.const) });
    }
    if (typeOf(value) === "integer" || typeOf(value) === "number") {
      if (s.minimum !== undefined && value < s.minimum) errors.push({ path, error: "must be at least " + s.minimum });
      if (s.maximum !== undefined && value > s.maximum) errors.push({ path, error: "must be at most " + s.maximum });
      if (s.exclusiveMinimum !== undefined && value <= s.exclusiveMinimum) errors.push({ path, error: "must be more than " + s.exclusiveMinimum });
      if (s.exclusiveMaximum !== undefined && value >= s.exclusiveMaximum) errors.push({ path, error: "must be less than " + s.exclusiveMaximum });
    }
    if (typeof value === "string") {
      const len = Array.from(value).length;
      if (s.minLength !== undefined && len < s.minLength) errors.push({ path, error: "must be at least " + s.minLength + " characters" });
      if (s.maxLength !== undefined && len > s.maxLength) errors.push({ path, error: "must be at most " + s.maxLength + " characters" });
      if (s.pattern !== undefined && !new RegExp(s.pattern, "u").test(value)) errors.push({ path, error: "must match " + s.pattern });
    }
    if (Array.isArray(value)) {
      if (s.minItems !== undefined && value.length < s.minItems) errors.push({ path, error: "must have at least " + s.minItems + " items" });
      if (s.maxItems !== undefined && value.length > s.maxItems) errors.push({ path, error: "must have at most " + s.maxItems + " items" });
      if (s.items !== undefined) value.forEach((item, i) => check(s.items, item, path + "[" + i + "]", errors));
    }
    if (typeOf(value) === "object") {
      for (const r of s.required || []) {
        if (!Object.prototype.hasOwnProperty.call(value, r)) errors.push({ path: join(path, r), error: "is required" });
      }
      for (const [k, deps] of Object.entries(s.dependentRequired || {})) {
        if (Object.prototype.hasOwnProperty.call(value, k)) {
          for (const d of deps) {
            if (!Object.prototype.hasOwnProperty.call(value, d)) errors.push({ path: join(path, d), error: "is required with " + k });
          }
        }
      }
      const props = s.properties || {};
      for (const [k, v] of Object.entries(value)) {
        if (Object.prototype.hasOwnProperty.call(props, k)) {
          check(props[k], v, join(path, k), errors);
        } else if (s.additionalProperties !== undefined) {
          if (s.additionalProperties === false) errors.push({ path: join(path, k), error: "is not a known field" });
          else check(s.additionalProperties, v, join(path, k), errors);
        }
      }
    }
    if (s.allOf) s.allOf.forEach((sub) => check(sub, value, path, errors));
    if (s.anyOf && !s.anyOf.some((sub) => passes(sub, value))) {
      errors.push({ path, error: "matches none of the allowed forms" });
    }
    if (s.oneOf) {
      const n = s.oneOf.filter((sub) => passes(sub, value)).length;
      if (n !== 1) errors.push({ path, error: n === 0 ? "matches none of the allowed forms" : "matches more than one of the exclusive forms" });
    }
    if (s.not && passes(s.not, value)) errors.push({ path, error: "has a combination that is not allowed" });
    if (s.if !== undefined) {
      if (passes(s.if, value)) { if (s.then !== undefined) check(s.then, value, path, errors); }
      else if (s.else !== undefined) check(s.else, value, path, errors);
    }
  }

  function passes(schema, value) {
    const errors = [];
    check(schema, value, "", errors);
    return errors.length === 0;
  }

  function join(path, key) {
    return path ? path + "." + key : key;
  }

  // Every problem of `value` against `schema`, as [{path, error}]; [] when valid.
  function validate(schema, value) {
    const errors = [];
    check(schema, value, "", errors);
    return errors;
  }

  global.EdgecamSchema = { validate };
})(typeof window !== "undefined" ? window : globalThis);
