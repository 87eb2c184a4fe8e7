module github.com/agentnet/agentnet

go 1.26.8
