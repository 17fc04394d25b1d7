// Package schemas is Verbatim's public event contract: the topic catalogue,
// the record envelope carried in Kafka headers, and (in package verbatimv1)
// the protobuf messages generated from proto/verbatim/v1. README.md in this
// folder documents every topic with a decoded example.
//
// Every stage may import schemas; schemas imports no other Verbatim package.
package schemas
