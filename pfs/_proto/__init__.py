"""Protobuf and gRPC modules generated from protos/ when the wheel is built."""
