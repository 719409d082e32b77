// An OPC UA client that is not CargoGate's: node-opcua (Node.js), as a SCADA or historian
// would read the controller's SCADA server. The test drives it with one JSON request on
// stdin and reads one JSON answer on stdout (a subscription prints "subscribed" first).
//
// Request:
//   endpoint     opc.tcp://127.0.0.1:PORT
//   namespace    the namespace URI (resolved to its index through the NamespaceArray)
//   read         [string node id, ...]        value, data type, array type, status, times
//   attributes   [string node id, ...]        DataType, AccessLevel, UserAccessLevel, Description
//   browse       [string node id, ...]        the browse names of each node's children
//   write        string node id               a write of 0; the answer is its status name
//                                             (or the service fault's)
//   subscribe    {node, changes, timeoutMs}   data changes of one node, after "subscribed"
//   security     {certificate, privateKey, serverCertificate, pki, applicationUri}
//                Basic256Sha256 SignAndEncrypt; the server's certificate is trusted up front
// Answer: {namespaceIndex, values, attributes, browse, write, changes} or {error}.
"use strict";

const fs = require("fs");
const {
  AttributeIds,
  ClientMonitoredItem,
  ClientSubscription,
  DataType,
  MessageSecurityMode,
  OPCUAClient,
  SecurityPolicy,
  TimestampsToReturn,
  VariantArrayType,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

function plain(variant) {
  const { dataType, value, arrayType } = variant;
  if (dataType === DataType.Int64 || dataType === DataType.UInt64) {
    const one = (v) => {
      const [high, low] = v; // node-opcua keeps 64-bit integers as [high, low] 32-bit words
      const high64 = dataType === DataType.Int64 ? BigInt(high) : BigInt(high >>> 0);
      return ((high64 << 32n) + BigInt(low >>> 0)).toString();
    };
    return arrayType === VariantArrayType.Array ? value.map(one) : one(value);
  }
  if (dataType === DataType.DateTime) {
    return value === null ? null : value.toISOString();
  }
  if (arrayType === VariantArrayType.Array) {
    return Array.from(value);
  }
  return value;
}

async function main() {
  const request = JSON.parse(fs.readFileSync(0, "utf8"));
  const options = {
    applicationName: "independent-scada-client",
    endpointMustExist: false,
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    securityMode: MessageSecurityMode.None,
    securityPolicy: SecurityPolicy.None,
  };
  const security = request.security;
  if (security) {
    const manager = new OPCUACertificateManager({
      rootFolder: security.pki,
      automaticallyAcceptUnknownCertificate: false,
    });
    await manager.initialize();
    await manager.trustCertificate(fs.readFileSync(security.serverCertificate));
    Object.assign(options, {
      securityMode: MessageSecurityMode.SignAndEncrypt,
      securityPolicy: SecurityPolicy.Basic256Sha256,
      certificateFile: security.certificate,
      privateKeyFile: security.privateKey,
      applicationUri: security.applicationUri,
      clientCertificateManager: manager,
    });
  }
  const client = OPCUAClient.create(options);
  const answer = { values: {}, attributes: {}, browse: {} };
  await client.connect(request.endpoint);
  try {
    const session = await client.createSession();
    try {
      const namespaces = await session.readNamespaceArray();
      const index = namespaces.indexOf(request.namespace);
      answer.namespaceIndex = index;
      const id = (s) => `ns=${index};s=${s}`;
      for (const node of request.read || []) {
        const dv = await session.read({ nodeId: id(node), attributeId: AttributeIds.Value });
        answer.values[node] = {
          status: dv.statusCode.name,
          dataType: dv.value ? DataType[dv.value.dataType] : null,
          array: dv.value ? dv.value.arrayType === VariantArrayType.Array : null,
          value: dv.value ? plain(dv.value) : null,
          sourceTimestamp: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
        };
      }
      for (const node of request.attributes || []) {
        const [access, userAccess, description, dataType] = await session.read([
          { nodeId: id(node), attributeId: AttributeIds.AccessLevel },
          { nodeId: id(node), attributeId: AttributeIds.UserAccessLevel },
          { nodeId: id(node), attributeId: AttributeIds.Description },
          { nodeId: id(node), attributeId: AttributeIds.DataType },
        ]);
        const type = dataType.value.value; // a NodeId in namespace 0 names a built-in type
        answer.attributes[node] = {
          dataType: type && type.namespace === 0 ? DataType[type.value] : String(type),
          accessLevel: access.value.value,
          userAccessLevel: userAccess.value.value,
          description: description.value.value ? description.value.value.text : null,
        };
      }
      for (const node of request.browse || []) {
        const result = await session.browse(id(node));
        answer.browse[node] = {
          status: result.statusCode.name,
          children: (result.references || []).map((r) => ({
            name: r.browseName.name,
            nodeId: r.nodeId.toString(),
          })),
        };
      }
      if (request.write) {
        // the status of the one write, or the fault of the whole service call
        try {
          const status = await session.write({
            nodeId: id(request.write),
            attributeId: AttributeIds.Value,
            value: { value: { dataType: DataType.Int32, value: 0 } },
          });
          answer.write = status.name;
        } catch (error) {
          const fault = /Bad[A-Za-z]+/.exec(String(error && error.message));
          answer.write = fault ? fault[0] : String(error);
        }
      }
      if (request.subscribe) {
        answer.changes = await changes(session, id(request.subscribe.node), request.subscribe);
      }
    } finally {
      await session.close();
    }
  } finally {
    await client.disconnect();
  }
  return answer;
}

async function changes(session, nodeId, { changes: wanted, timeoutMs }) {
  const subscription = ClientSubscription.create(session, {
    requestedPublishingInterval: 50,
    requestedLifetimeCount: 1000,
    requestedMaxKeepAliveCount: 20,
    publishingEnabled: true,
  });
  const seen = [];
  const item = ClientMonitoredItem.create(
    subscription,
    { nodeId, attributeId: AttributeIds.Value },
    { samplingInterval: 0, discardOldest: true, queueSize: 10 },
    TimestampsToReturn.Both,
  );
  await new Promise((resolve) => item.once("initialized", resolve));
  const done = new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    item.on("changed", (dv) => {
      seen.push({ status: dv.statusCode.name, value: dv.value ? plain(dv.value) : null });
      if (seen.length >= wanted) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  process.stdout.write("subscribed\n");
  await done;
  await subscription.terminate();
  return seen;
}

main().then(
  (answer) => {
    process.stdout.write(JSON.stringify(answer) + "\n");
    process.exit(0);
  },
  (error) => {
    process.stdout.write(JSON.stringify({ error: String(error && error.message) }) + "\n");
    process.exit(0);
  },
);
