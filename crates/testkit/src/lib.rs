//! Test helpers for Sluice: process clusters on loopback, corpora and reference results.
